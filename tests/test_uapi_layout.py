"""uapi against C: every struct size, field offset and constant compared with gcc's answer.

SPEC §3, §13.1 [decision D2].  A C program generated from the Python definitions includes
the system's <linux/vfio.h> and <linux/pci_regs.h> and the shipped vfio_pamu.h, prints
``sizeof``/``offsetof`` of every struct field and the value of every constant, and the test
compares each line with Python -- the oracle approach of pyelftools' run_readelf_tests.py.

Known oracle differences (the installed headers are Linux 6.1, SPEC is 6.18):

* ``vfio_device_info.pad`` and ``vfio_iommu_type1_info.pad`` exist from 6.6 only
  (SPEC §2.7 #14).  Without them the C struct ends at the member's offset (device info: 20
  bytes) or keeps the same size as tail padding (type1 info: 24 bytes); everything before
  the member still has to match.
* Members and constants newer than the installed headers (``devid``, CDX, the iommufd
  ioctls, ...) are compared with ``MAINLINE_ONLY`` below, values read from
  torvalds/linux:include/uapi/linux/vfio.h; the names are reported in a warning.
"""

from __future__ import annotations

import ctypes
import importlib.resources
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from vfiosim.uapi import pci_regs, vfio, vfio_pamu
from vfiosim.uapi.vfio import offsetof, offsetofend

GCC = shutil.which("gcc")
pytestmark = pytest.mark.skipif(
    GCC is None, reason="gcc is not installed: the C layout oracle cannot be compiled"
)

PAMU_H = Path(str(importlib.resources.files("vfiosim") / "include" / "vfio_pamu.h"))

# Python-side helper structs for members C declares inline (anonymous struct/union types).
C_ANONYMOUS: set[type] = {
    vfio._vfio_pci_dependent_device_id,
    vfio_pamu.vfio_pamu_attr_geometry,
    vfio_pamu.vfio_pamu_attr_stash,
    vfio_pamu.vfio_pamu_attr_info,
}

# Members that newer headers have and older ones lack; probed with one compile each.
OPTIONAL_MEMBERS: list[tuple[type, str]] = [
    (vfio.vfio_device_info, "pad"),  # 6.6, SPEC §2.7 #14
    (vfio.vfio_iommu_type1_info, "pad"),  # 6.6, SPEC §2.7 #14
    (vfio.vfio_pci_dependent_device, "devid"),  # iommufd cdev hot reset
    (vfio.vfio_device_ioeventfd, "reserved"),  # explicit tail padding
]

# Constants vfiosim defines that the installed headers may predate: the mainline value.
# Source: torvalds/linux include/uapi/linux/vfio.h (and pci_regs.h).
MAINLINE_ONLY: dict[str, int] = {
    "VFIO_DEVICE_FLAGS_CDX": 1 << 8,
    "VFIO_PCI_DEVID_OWNED": 0,
    "VFIO_PCI_DEVID_NOT_OWNED": -1,
    "VFIO_PCI_HOT_RESET_FLAG_DEV_ID": 1 << 0,
    "VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED": 1 << 1,
    "VFIO_DEVICE_BIND_IOMMUFD": 0x3B64 + 18,
    "VFIO_DEVICE_ATTACH_IOMMUFD_PT": 0x3B64 + 19,
    "VFIO_DEVICE_DETACH_IOMMUFD_PT": 0x3B64 + 20,
    "VFIO_DEVICE_FEATURE_MIG_DATA_SIZE": 9,
    "VFIO_DEVICE_FEATURE_BUS_MASTER": 10,
}

# vfiosim's own names, in no C header: checked by test_vfiosim_only_names.
VFIOSIM_ONLY = {
    "VFIO_DEVICE_INFO_MINSZ",
    "VFIO_DEVICE_INFO_SIZE_PRE_6_6",
    "VFIO_IOMMU_TYPE1_INFO_MINSZ",
    "VFIO_IOMMU_TYPE1_INFO_SIZE_PRE_6_6",
    "VFIO_PCI_OFFSET_SHIFT",  # include/linux/vfio_pci_core.h: kernel-internal
    "VFIO_PCI_OFFSET_MASK",
}

_ENUM_RE = re.compile(r"^VFIO_PCI_(\w+_(REGION|IRQ)_INDEX|NUM_REGIONS|NUM_IRQS)$")
_CONST_RE = re.compile(r"^(VFIO|PCI|PAMU)_\w+$")
MODULES: list[ModuleType] = [vfio, vfio_pamu, pci_regs]


# ---------------------------------------------------------------------------------------------
# What Python defines


def python_structs() -> list[type]:
    """Every uapi struct with a C name, in definition order."""
    out: list[type] = []
    for mod in (vfio, vfio_pamu):
        for name, obj in vars(mod).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, ctypes.Structure | ctypes.Union)
                and obj.__module__ == mod.__name__
                and name.startswith("vfio_")
                and obj not in C_ANONYMOUS
            ):
                out.append(obj)
    return out


def python_constants() -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for mod in MODULES:
        for name, value in vars(mod).items():
            if _CONST_RE.match(name) and isinstance(value, int | str) and name not in out:
                out[name] = value if isinstance(value, str) else int(value)
    return out


def field_paths(cls: type, prefix: str = "") -> Iterator[tuple[str, bool]]:
    """(C member path, is_flexible_array) for every member C declares.

    Padding (``__pad``) is Python's name for a C hole and is skipped; anonymous members are
    entered as C does; nested structs and unions are entered too (``attr_info.attr.x``).
    """
    anonymous = getattr(cls, "_anonymous_", ())
    for name, ftype, *_ in cls._fields_:
        if name.startswith("__"):
            continue
        if name in anonymous:
            yield from field_paths(ftype, prefix)
            continue
        path = prefix + name
        yield path, issubclass(ftype, ctypes.Array) and ftype._length_ == 0
        if issubclass(ftype, ctypes.Structure | ctypes.Union):
            yield from field_paths(ftype, path + ".")


def members(cls: type) -> list[tuple[str, int, int, bool]]:
    """(path, offset, size, is_flexible_array), offsets from the start of ``cls``."""
    return [
        (path, offsetof(cls, path), offsetofend(cls, path) - offsetof(cls, path), flexible)
        for path, flexible in field_paths(cls)
    ]


# ---------------------------------------------------------------------------------------------
# What C says


def _compile_and_run(src: str, tmp: Path, name: str, flags: list[str] | None = None) -> str:
    c = tmp / f"{name}.c"
    exe = tmp / name
    c.write_text(src)
    cmd = [
        GCC,
        "-Wall",
        "-Werror",
        "-I",
        str(PAMU_H.parent),
        *(flags or []),
        "-o",
        str(exe),
        str(c),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}\n--- source ---\n{src}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    return run.stdout


def _compiles(src: str, tmp: Path, name: str, flags: list[str] | None = None) -> bool:
    c = tmp / f"{name}.c"
    c.write_text(src)
    cmd = [
        GCC,
        "-fsyntax-only",
        "-Wall",
        "-Werror",
        "-I",
        str(PAMU_H.parent),
        *(flags or []),
        str(c),
    ]
    return subprocess.run(cmd, capture_output=True).returncode == 0


PROLOGUE = """\
#include <stddef.h>
#include <stdio.h>
#include <linux/vfio.h>
#include <linux/pci.h>
#include <linux/pci_regs.h>
#include "vfio_pamu.h"
#define MEMBER_SIZE(type, m) sizeof(((type *)0)->m)
int main(void)
{
"""


def c_struct_name(cls: type) -> str:
    return ("union " if issubclass(cls, ctypes.Union) else "struct ") + cls.__name__


class COracle:
    """The compiled program's answers, parsed."""

    def __init__(self, tmp: Path) -> None:
        self.absent_members: set[tuple[str, str]] = set()
        for cls, member in OPTIONAL_MEMBERS:
            probe = (
                "#include <stddef.h>\n#include <linux/vfio.h>\n"
                f"int x = offsetof({c_struct_name(cls)}, {member});\n"
            )
            if not _compiles(probe, tmp, f"probe_{cls.__name__}_{member}"):
                self.absent_members.add((cls.__name__, member))

        lines = [PROLOGUE]
        for cls in python_structs():
            cname = c_struct_name(cls)
            lines.append(f'  printf("sizeof {cls.__name__} %zu\\n", sizeof({cname}));')
            for path, flexible in field_paths(cls):
                if (cls.__name__, path) in self.absent_members:
                    continue
                lines.append(
                    f'  printf("offsetof {cls.__name__}.{path} %zu\\n", offsetof({cname}, {path}));'
                )
                if not flexible:
                    lines.append(
                        f'  printf("sizeof {cls.__name__}.{path} %zu\\n", '
                        f"MEMBER_SIZE({cname}, {path}));"
                    )
        for name, value in python_constants().items():
            if name in VFIOSIM_ONLY:
                continue
            if isinstance(value, str):
                fmt, expr = "%s", name
            else:
                fmt, expr = "%lld", f"(long long)({name})"
            line = f'  printf("const {name} {fmt}\\n", {expr});'
            if _ENUM_RE.match(name):
                lines.append(line)  # enumerators, not macros
            else:
                lines.append(f'#ifdef {name}\n{line}\n#else\n  printf("absent {name}\\n");\n#endif')
        for member in pci_regs.PciCapId:
            lines.append(f'  printf("capid {member.name} %d\\n", PCI_CAP_ID_{member.name});')
        for devfn in DEVFNS:
            lines.append(
                f'  printf("devfn {devfn} %d %d\\n", PCI_SLOT({devfn}), PCI_FUNC({devfn}));'
            )
        lines.append("  return 0;\n}\n")
        self.source = "\n".join(lines)
        out = _compile_and_run(self.source, tmp, "uapi_layout")

        self.sizes: dict[str, int] = {}
        self.offsets: dict[str, int] = {}
        self.consts: dict[str, str] = {}
        self.absent: set[str] = set()
        self.capids: dict[str, int] = {}
        self.devfns: dict[int, tuple[int, int]] = {}
        for line in out.splitlines():
            kind, key, *rest = line.split(" ", 2)
            if kind == "sizeof":
                self.sizes[key] = int(rest[0])
            elif kind == "offsetof":
                self.offsets[key] = int(rest[0])
            elif kind == "const":
                self.consts[key] = rest[0] if rest else ""
            elif kind == "absent":
                self.absent.add(key)
            elif kind == "capid":
                self.capids[key] = int(rest[0])
            elif kind == "devfn":
                slot, func = rest[0].split()
                self.devfns[int(key)] = (int(slot), int(func))


DEVFNS = (0x00, 0x07, 0x08, 0x45, 0xF9, 0xFF)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> COracle:
    return COracle(tmp_path_factory.mktemp("uapi_c"))


# ---------------------------------------------------------------------------------------------
# Structs


@pytest.mark.parametrize("cls", python_structs(), ids=lambda c: c.__name__)
def test_struct_layout(oracle: COracle, cls: type) -> None:
    name = cls.__name__
    py_size = ctypes.sizeof(cls)
    absent = [m for (s, m) in oracle.absent_members if s == name]
    c_size = oracle.sizes[name]
    if absent:
        # SPEC §2.7 #14: a member the installed headers predate.  C then either keeps the
        # same size (the member was tail padding: vfio_iommu_type1_info) or ends where the
        # member starts (vfio_device_info: 20 bytes in 6.1, 24 from 6.6).
        allowed = {py_size} | {offsetof(cls, m) for m in absent}
        assert c_size in allowed, f"sizeof({name}): C {c_size}, Python {py_size}"
    else:
        assert c_size == py_size, f"sizeof({name}): C {c_size}, Python {py_size}"

    checked = 0
    for path, off, size, flexible in members(cls):
        key = f"{name}.{path}"
        if (name, path) in oracle.absent_members:
            continue
        assert oracle.offsets[key] == off, f"offsetof({key}): C {oracle.offsets[key]}, Py {off}"
        if not flexible:
            assert oracle.sizes[key] == size, f"sizeof({key}): C {oracle.sizes[key]}, Py {size}"
        checked += 1
    assert checked >= 1


def test_optional_members_are_the_known_ones(oracle: COracle) -> None:
    """The installed 6.1 headers lack exactly the members SPEC §2.7 #14 and later series add.

    A newer header may lack fewer; it may never lack one not listed in OPTIONAL_MEMBERS
    (that would have failed to compile above) -- and the two ``pad`` members must behave as
    §2.7 #14 says: device info ends at ``cap_offset``, type1 info keeps its 24 bytes.
    """
    if ("vfio_device_info", "pad") in oracle.absent_members:
        assert oracle.sizes["vfio_device_info"] == vfio.VFIO_DEVICE_INFO_SIZE_PRE_6_6 == 20
    else:
        assert oracle.sizes["vfio_device_info"] == 24
    assert oracle.sizes["vfio_iommu_type1_info"] == 24
    if oracle.absent_members:
        warnings.warn(
            "members absent from the installed headers, not compared with C: "
            + ", ".join(sorted(f"{s}.{m}" for s, m in oracle.absent_members)),
            stacklevel=1,
        )


def test_padding_is_named() -> None:
    """STYLE: every byte of a struct belongs to a named field; ctypes must add no hole."""
    for cls in python_structs():
        if issubclass(cls, ctypes.Union):
            continue
        end = 0
        for name, ftype, *_ in cls._fields_:
            off = getattr(cls, name).offset
            flexible = issubclass(ftype, ctypes.Array) and ftype._length_ == 0
            assert off == end or (flexible and off == ctypes.sizeof(cls)), (
                f"{cls.__name__}.{name}: implicit hole {end}..{off}"
            )
            end = off + ctypes.sizeof(ftype)
        assert end == ctypes.sizeof(cls), f"{cls.__name__}: implicit tail padding"


# ---------------------------------------------------------------------------------------------
# Constants


def _constant_ids() -> list[str]:
    return [n for n in python_constants() if n not in VFIOSIM_ONLY]


@pytest.mark.parametrize("name", _constant_ids())
def test_constant(oracle: COracle, name: str) -> None:
    value = python_constants()[name]
    if name in oracle.absent:
        assert name in MAINLINE_ONLY, (
            f"{name} is not defined by the installed headers nor listed in MAINLINE_ONLY: "
            "a misspelt name, or a constant that needs its mainline value recorded"
        )
        assert value == MAINLINE_ONLY[name]
        return
    c_value = oracle.consts[name]
    if isinstance(value, str):
        assert c_value == value
    else:
        assert int(c_value) == value, f"{name}: C {c_value}, Python {value}"


def test_not_compared_constants_reported(oracle: COracle) -> None:
    """List what the installed headers could not check (compared with MAINLINE_ONLY)."""
    absent = sorted(oracle.absent)
    assert set(absent) <= set(MAINLINE_ONLY)
    if absent:
        warnings.warn(
            "constants absent from the installed headers, compared with mainline values "
            "instead: " + ", ".join(absent),
            stacklevel=1,
        )


def test_pci_cap_ids(oracle: COracle) -> None:
    assert oracle.capids == {m.name: int(m) for m in pci_regs.PciCapId}


def test_devfn_helpers(oracle: COracle) -> None:
    for devfn, (slot, func) in oracle.devfns.items():
        assert (pci_regs.PCI_SLOT(devfn), pci_regs.PCI_FUNC(devfn)) == (slot, func)
        assert pci_regs.PCI_DEVFN(slot, func) == devfn


def test_vfiosim_only_names(oracle: COracle) -> None:
    """Names vfiosim adds: each equals the C expression it stands for."""
    # vfio_pci_ioctl_get_info(): minsz = offsetofend(struct vfio_device_info, num_irqs)
    assert vfio.VFIO_DEVICE_INFO_MINSZ == oracle.offsets["vfio_device_info.num_irqs"] + 4 == 16
    # vfio_iommu_type1_get_info(): minsz = offsetofend(..., iova_pgsizes)
    assert (
        vfio.VFIO_IOMMU_TYPE1_INFO_MINSZ
        == oracle.offsets["vfio_iommu_type1_info.iova_pgsizes"] + 8
        == 16
    )
    assert vfio.VFIO_DEVICE_INFO_SIZE_PRE_6_6 == oracle.offsets["vfio_device_info.cap_offset"] + 4
    assert (
        vfio.VFIO_IOMMU_TYPE1_INFO_SIZE_PRE_6_6
        == oracle.offsets["vfio_iommu_type1_info.cap_offset"] + 4
        == 20
    )
    # SPEC §3.5: region i at file offset i << 40 (include/linux/vfio_pci_core.h)
    assert vfio.VFIO_PCI_OFFSET_SHIFT == 40
    assert vfio.VFIO_PCI_INDEX_TO_OFFSET(vfio.VFIO_PCI_CONFIG_REGION_INDEX) == 0x700_0000_0000
    assert vfio.VFIO_PCI_OFFSET_TO_INDEX(0x700_0000_0ABC) == 7
    assert 0x700_0000_0ABC & vfio.VFIO_PCI_OFFSET_MASK == 0xABC


def test_every_python_name_was_looked_at(oracle: COracle) -> None:
    """Each constant got an answer from C: a value or an explicit 'absent'."""
    for name in _constant_ids():
        assert (name in oracle.consts) != (name in oracle.absent), name


# ---------------------------------------------------------------------------------------------
# SPEC tables, literally (§3.4, §3.6): the C oracle checks the headers, this checks SPEC.

SPEC_SIZES = {
    "vfio_info_cap_header": 8,
    "vfio_group_status": 8,
    "vfio_device_info": 24,
    "vfio_region_info": 32,
    "vfio_irq_info": 16,
    "vfio_irq_set": 20,
    "vfio_iommu_type1_info": 24,
    "vfio_iova_range": 16,
    "vfio_iommu_type1_info_cap_iova_range": 16,
    "vfio_iommu_type1_info_dma_avail": 12,
    "vfio_iommu_type1_info_cap_migration": 32,
    "vfio_iommu_type1_dma_map": 32,
    "vfio_iommu_type1_dma_unmap": 24,
    "vfio_bitmap": 24,
    "vfio_iommu_type1_dirty_bitmap": 8,
    "vfio_iommu_type1_dirty_bitmap_get": 40,
    "vfio_pci_dependent_device": 8,
    "vfio_pci_hot_reset_info": 12,
    "vfio_pci_hot_reset": 12,
    "vfio_pamu_attr": 32,
    "vfio_pamu_msi_bank_map": 24,
    "vfio_pamu_msi_bank_unmap": 16,
}

SPEC_OFFSETS = {
    ("vfio_region_info", "size"): 16,
    ("vfio_region_info", "offset"): 24,
    ("vfio_irq_set", "data"): 20,
    ("vfio_iommu_type1_info", "cap_offset"): 16,
    ("vfio_iommu_type1_info", "pad"): 20,
    ("vfio_device_info", "cap_offset"): 16,
    ("vfio_device_info", "pad"): 20,
    ("vfio_iommu_type1_info_cap_iova_range", "iova_ranges"): 16,
    ("vfio_iommu_type1_info_cap_migration", "pgsize_bitmap"): 16,
    ("vfio_iommu_type1_info_cap_migration", "max_dirty_bitmap_size"): 24,
    ("vfio_iommu_type1_dma_unmap", "data"): 24,
    ("vfio_iommu_type1_dirty_bitmap", "data"): 8,
    ("vfio_iommu_type1_dirty_bitmap_get", "bitmap.data"): 32,
    ("vfio_pci_dependent_device", "segment"): 4,
    ("vfio_pci_dependent_device", "bus"): 6,
    ("vfio_pci_dependent_device", "devfn"): 7,
    ("vfio_pci_hot_reset_info", "devices"): 12,
    ("vfio_pci_hot_reset", "group_fds"): 12,
    ("vfio_pamu_attr", "attribute"): 8,
    ("vfio_pamu_attr", "attr_info"): 16,
    ("vfio_pamu_attr", "attr_info.attr.aperture_start"): 16,
    ("vfio_pamu_attr", "attr_info.attr.aperture_end"): 24,
    ("vfio_pamu_attr", "attr_info.windows"): 16,
    ("vfio_pamu_attr", "attr_info.stash.cpu"): 16,
    ("vfio_pamu_attr", "attr_info.stash.cache"): 20,
    ("vfio_pamu_msi_bank_map", "msi_bank_index"): 8,
    ("vfio_pamu_msi_bank_map", "iova"): 16,
    ("vfio_pamu_msi_bank_unmap", "iova"): 8,
}

# minsz = offsetofend(struct, field) as the handlers compute it (SPEC §3.4, §3.6).
SPEC_MINSZ = {
    ("vfio_group_status", "flags"): 8,
    ("vfio_device_info", "num_irqs"): 16,
    ("vfio_region_info", "offset"): 32,
    ("vfio_irq_info", "count"): 16,
    ("vfio_irq_set", "count"): 20,
    ("vfio_iommu_type1_info", "iova_pgsizes"): 16,
    ("vfio_iommu_type1_dma_map", "size"): 32,
    ("vfio_iommu_type1_dma_unmap", "size"): 24,
    ("vfio_iommu_type1_dirty_bitmap", "flags"): 8,
    ("vfio_pci_hot_reset_info", "count"): 12,
    ("vfio_pci_hot_reset", "count"): 12,
    ("vfio_pamu_attr", "attr_info"): 32,
    ("vfio_pamu_msi_bank_map", "iova"): 24,
    ("vfio_pamu_msi_bank_unmap", "iova"): 16,
}


def _cls(name: str) -> type:
    return getattr(vfio, name, None) or getattr(vfio_pamu, name)


@pytest.mark.parametrize("name,size", SPEC_SIZES.items())
def test_spec_sizes(name: str, size: int) -> None:
    assert ctypes.sizeof(_cls(name)) == size


@pytest.mark.parametrize("key,off", SPEC_OFFSETS.items(), ids=lambda k: str(k))
def test_spec_offsets(key: tuple[str, str], off: int) -> None:
    assert offsetof(_cls(key[0]), key[1]) == off


@pytest.mark.parametrize("key,minsz", SPEC_MINSZ.items(), ids=lambda k: str(k))
def test_spec_minsz(key: tuple[str, str], minsz: int) -> None:
    assert offsetofend(_cls(key[0]), key[1]) == minsz


def test_offsetofend_of_anonymous_union_member() -> None:
    # group_id lives in an anonymous union in mainline; C spells it without the union.
    assert offsetofend(vfio.vfio_pci_dependent_device, "group_id") == 4
    assert offsetof(vfio.vfio_pci_dependent_device, "devid") == 0
    with pytest.raises(AttributeError):
        offsetof(vfio.vfio_pci_dependent_device, "nope")


# ---------------------------------------------------------------------------------------------
# vfio_pamu.h stands alone


STANDALONE = """\
#include "vfio_pamu.h"
#include <stddef.h>
_Static_assert(sizeof(struct vfio_pamu_attr) == 32, "vfio_pamu_attr");
_Static_assert(offsetof(struct vfio_pamu_attr, attr_info) == 16, "attr_info");
_Static_assert(offsetof(struct vfio_pamu_attr, attr_info.attr.aperture_end) == 24, "end");
_Static_assert(offsetof(struct vfio_pamu_attr, attr_info.stash.cache) == 20, "cache");
_Static_assert(sizeof(struct vfio_pamu_msi_bank_map) == 24, "msi_bank_map");
_Static_assert(offsetof(struct vfio_pamu_msi_bank_map, iova) == 16, "map iova");
_Static_assert(sizeof(struct vfio_pamu_msi_bank_unmap) == 16, "msi_bank_unmap");
_Static_assert(VFIO_IOMMU_PAMU_GET_ATTR == 0x3b73, "GET_ATTR");
_Static_assert(VFIO_IOMMU_PAMU_UNMAP_MSI_BANK == 0x3b77, "UNMAP_MSI_BANK");
_Static_assert(VFIO_FSL_PAMU_IOMMU == VFIO_SPAPR_TCE_IOMMU, "SPEC 3.3: id 2");
int main(void)
{
	struct vfio_pamu_attr attr = { .argsz = sizeof(attr), .attribute = VFIO_ATTR_GEOMETRY };
	struct vfio_iommu_type1_dma_map map = { .argsz = sizeof(map) };
	return (int)(attr.attr_info.attr.aperture_end + map.size);
}
"""


@pytest.mark.parametrize("std", ["gnu11", "c99"])
def test_vfio_pamu_h_stands_alone(tmp_path: Path, std: str) -> None:
    """``#include "vfio_pamu.h"`` alone, -Wall -Wextra -Werror -pedantic: it brings its own
    <linux/vfio.h>, and twice-inclusion is harmless (include guard)."""
    src = STANDALONE.replace('#include "vfio_pamu.h"\n', '#include "vfio_pamu.h"\n' * 2)
    if std == "c99":  # no _Static_assert in C99
        src = re.sub(r"^_Static_assert.*\n", "", src, flags=re.M)
    out = _compile_and_run(src, tmp_path, f"alone_{std}", [f"-std={std}", "-Wextra", "-pedantic"])
    assert out == ""


def test_vfio_pamu_h_after_linux_vfio_h(tmp_path: Path) -> None:
    src = "#include <linux/vfio.h>\n" + STANDALONE
    _compile_and_run(src, tmp_path, "after", ["-Wextra"])


def test_vfio_pamu_h_layout_on_i386(tmp_path: Path) -> None:
    """__aligned_u64 keeps the layout on an ABI whose u64 is 4-byte aligned (i386)."""
    probe = '#include <linux/types.h>\n_Static_assert(_Alignof(__u64) == 4, "i386");\n'
    flags = ["-m32", "-idirafter", "/usr/include/x86_64-linux-gnu"]
    if not _compiles(probe, tmp_path, "m32_probe", flags):
        pytest.skip("gcc -m32 cannot compile against the kernel headers here")
    assert _compiles(STANDALONE, tmp_path, "m32_pamu", flags)
