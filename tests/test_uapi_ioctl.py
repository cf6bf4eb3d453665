"""ioctl request numbers: the asm-generic encoding and the VFIO table of SPEC §3.2."""

from __future__ import annotations

import ctypes
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfiosim.uapi import vfio, vfio_pamu
from vfiosim.uapi.ioctl import (
    _IO,
    _IOC,
    _IOC_DIR,
    _IOC_NONE,
    _IOC_NR,
    _IOC_READ,
    _IOC_SIZE,
    _IOC_TYPE,
    _IOC_WRITE,
    _IOR,
    _IOW,
    _IOWR,
    IOC_IN,
    IOC_INOUT,
    IOC_OUT,
    IOCSIZE_MASK,
)

# SPEC §3.2, literally: (n, value, name, file).  Mainline meanings of the colliding numbers
# are in the second table.
SPEC_TABLE = [
    (0, 0x3B64, "VFIO_GET_API_VERSION", "container"),
    (1, 0x3B65, "VFIO_CHECK_EXTENSION", "container"),
    (2, 0x3B66, "VFIO_SET_IOMMU", "container"),
    (3, 0x3B67, "VFIO_GROUP_GET_STATUS", "group"),
    (4, 0x3B68, "VFIO_GROUP_SET_CONTAINER", "group"),
    (5, 0x3B69, "VFIO_GROUP_UNSET_CONTAINER", "group"),
    (6, 0x3B6A, "VFIO_GROUP_GET_DEVICE_FD", "group"),
    (7, 0x3B6B, "VFIO_DEVICE_GET_INFO", "device"),
    (8, 0x3B6C, "VFIO_DEVICE_GET_REGION_INFO", "device"),
    (9, 0x3B6D, "VFIO_DEVICE_GET_IRQ_INFO", "device"),
    (10, 0x3B6E, "VFIO_DEVICE_SET_IRQS", "device"),
    (11, 0x3B6F, "VFIO_DEVICE_RESET", "device"),
    (12, 0x3B70, "VFIO_IOMMU_GET_INFO", "type1"),
    (12, 0x3B70, "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", "device"),
    (13, 0x3B71, "VFIO_IOMMU_MAP_DMA", "type1"),
    (13, 0x3B71, "VFIO_DEVICE_PCI_HOT_RESET", "device"),
    (14, 0x3B72, "VFIO_IOMMU_UNMAP_DMA", "type1"),
    (14, 0x3B72, "VFIO_DEVICE_QUERY_GFX_PLANE", "device"),
    (15, 0x3B73, "VFIO_IOMMU_PAMU_GET_ATTR", "fsl_pamu"),
    (16, 0x3B74, "VFIO_IOMMU_PAMU_SET_ATTR", "fsl_pamu"),
    (17, 0x3B75, "VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT", "fsl_pamu"),
    (17, 0x3B75, "VFIO_IOMMU_DIRTY_PAGES", "type1"),
    (18, 0x3B76, "VFIO_IOMMU_PAMU_MAP_MSI_BANK", "fsl_pamu"),
    (19, 0x3B77, "VFIO_IOMMU_PAMU_UNMAP_MSI_BANK", "fsl_pamu"),
]

MAINLINE_COLLISIONS = [
    (15, "VFIO_IOMMU_ENABLE", "spapr"),
    (16, "VFIO_IOMMU_DISABLE", "spapr"),
    (17, "VFIO_IOMMU_SPAPR_REGISTER_MEMORY", "spapr"),
    (18, "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY", "spapr"),
    (19, "VFIO_IOMMU_SPAPR_TCE_CREATE", "spapr"),
    (15, "VFIO_DEVICE_GET_GFX_DMABUF", "device"),
    (16, "VFIO_DEVICE_IOEVENTFD", "device"),
    (17, "VFIO_DEVICE_FEATURE", "device"),
]


def _value(name: str) -> int:
    return getattr(vfio, name) if hasattr(vfio, name) else getattr(vfio_pamu, name)


def _kind(file: str) -> tuple[str, str | None]:
    """(file kind, container backend) for ioctl_name."""
    if file in ("type1", "fsl_pamu", "spapr"):
        return "container", file
    return file, None


@pytest.mark.parametrize("n,value,name,file", SPEC_TABLE, ids=[r[2] for r in SPEC_TABLE])
def test_spec_table(n: int, value: int, name: str, file: str) -> None:
    assert _value(name) == value == 0x3B64 + n == _IO(";", 100 + n) == _IO(vfio.VFIO_TYPE, n + 100)
    kind, iommu = _kind(file)
    assert vfio.ioctl_name(value, kind, iommu) == name


@pytest.mark.parametrize(
    "n,name,file", MAINLINE_COLLISIONS, ids=[r[1] for r in MAINLINE_COLLISIONS]
)
def test_mainline_collisions(n: int, name: str, file: str) -> None:
    assert _value(name) == 0x3B64 + n
    kind, iommu = _kind(file)
    assert vfio.ioctl_name(0x3B64 + n, kind, iommu) == name
    assert name in vfio.IOCTL_NAMES[0x3B64 + n]


def test_group_get_status_is_io_not_ior() -> None:
    """STYLE: defined from the #define (_IO), not from the comment (_IOR)."""
    assert vfio.VFIO_GROUP_GET_STATUS == 0x3B67
    assert vfio.VFIO_GROUP_GET_STATUS != _IOR(";", 103, vfio.vfio_group_status)


def test_every_vfio_ioctl_is_plain_io() -> None:
    """SPEC §3.1: no direction, no size, type ';', nr = 100 + n."""
    every = dict(vfio.IOCTL_NAMES)
    for value, name in vfio_pamu.PAMU_IOCTLS.items():
        every.setdefault(value, (name,))
    assert len(every) == 22  # 0x3b64 .. 0x3b79: n = 0 .. 21
    for value, names in every.items():
        assert _IOC_DIR(value) == _IOC_NONE, names
        assert _IOC_SIZE(value) == 0, names
        assert _IOC_TYPE(value) == vfio.VFIO_TYPE == 0x3B, names
        assert 100 <= _IOC_NR(value) == value - 0x3B00 <= 121, names
        for name in names:
            assert _value(name) == value


def test_collision_tuples() -> None:
    assert vfio.IOCTL_NAMES[0x3B70] == (
        "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO",
        "VFIO_IOMMU_GET_INFO",
        "VFIO_IOMMU_SPAPR_TCE_GET_INFO",
    )
    assert set(vfio.IOCTL_NAMES[0x3B75]) == {
        "VFIO_DEVICE_FEATURE",
        "VFIO_IOMMU_DIRTY_PAGES",
        "VFIO_IOMMU_SPAPR_REGISTER_MEMORY",
    }
    assert vfio.IOCTL_NAMES[0x3B64] == ("VFIO_GET_API_VERSION",)


def test_ioctl_name_fallbacks() -> None:
    # Before SET_IOMMU a container has only the three core ioctls.
    assert vfio.ioctl_name(0x3B70, "container") == "0x3b70"
    assert vfio.ioctl_name(0x3B64, "container", "fsl_pamu") == "VFIO_GET_API_VERSION"
    assert vfio.ioctl_name(0x3B67, "device") == "0x3b67"
    assert vfio.ioctl_name(0xC0502100, "group") == "0xc0502100"
    with pytest.raises(ValueError):
        vfio.ioctl_name(0x3B64, "socket")


def test_name_map_refuses_collisions() -> None:
    with pytest.raises(ValueError, match="share"):
        vfio.name_map({"A": 1, "B": 1}, ["A", "B"])


def test_extension_ids() -> None:
    """SPEC §3.3."""
    assert vfio.EXTENSION_NAMES == {
        1: "VFIO_TYPE1_IOMMU",
        2: "VFIO_SPAPR_TCE_IOMMU",
        3: "VFIO_TYPE1v2_IOMMU",
        4: "VFIO_DMA_CC_IOMMU",
        5: "VFIO_EEH",
        6: "VFIO_TYPE1_NESTING_IOMMU",
        7: "VFIO_SPAPR_TCE_v2_IOMMU",
        8: "VFIO_NOIOMMU_IOMMU",
        9: "VFIO_UNMAP_ALL",
        10: "VFIO_UPDATE_VADDR",
    }
    assert vfio_pamu.VFIO_FSL_PAMU_IOMMU == vfio.VFIO_SPAPR_TCE_IOMMU == 2
    assert vfio.VFIO_API_VERSION == 0 and vfio.VFIO_BASE == 100


# ---------------------------------------------------------------------------------------------
# The encoding itself


class seccomp_notif_sizeof(ctypes.Structure):
    """80 bytes, like struct seccomp_notif (include/uapi/linux/seccomp.h)."""

    _fields_ = [("raw", ctypes.c_uint8 * 80)]


def test_known_numbers() -> None:
    # include/uapi/linux/seccomp.h
    assert _IOWR(ord("!"), 0, 80) == 0xC0502100  # SECCOMP_IOCTL_NOTIF_RECV
    assert _IOWR("!", 0, seccomp_notif_sizeof) == 0xC0502100
    assert _IOWR("!", 1, 24) == 0xC0182101  # SECCOMP_IOCTL_NOTIF_SEND
    assert _IOW("!", 2, ctypes.c_uint64) == 0x40082102  # SECCOMP_IOCTL_NOTIF_ID_VALID
    assert _IOW("!", 3, 24) == 0x40182103  # SECCOMP_IOCTL_NOTIF_ADDFD
    # include/uapi/linux/fs.h: BLKGETSIZE64 _IOR(0x12, 114, size_t)
    assert _IOR(0x12, 114, ctypes.c_size_t) == 0x80081272
    assert IOC_IN == 0x40000000 and IOC_OUT == 0x80000000 and IOC_INOUT == 0xC0000000
    assert IOCSIZE_MASK == 0x3FFF0000


@pytest.mark.parametrize(
    "args",
    [
        (4, 0x3B, 0, 0),  # dir has 2 bits
        (0, 0x100, 0, 0),  # type 8 bits
        (0, 0x3B, 0x100, 0),  # nr 8 bits
        (0, 0x3B, 0, 1 << 14),  # size 14 bits
        (0, -1, 0, 0),
        (0, ";;", 0, 0),
    ],
)
def test_out_of_range_fields_are_refused(args: tuple) -> None:
    with pytest.raises(ValueError):
        _IOC(*args)


@given(
    d=st.integers(0, 3),
    t=st.integers(0, 255),
    nr=st.integers(0, 255),
    size=st.integers(0, (1 << 14) - 1),
)
def test_encode_decode_round_trip(d: int, t: int, nr: int, size: int) -> None:
    req = _IOC(d, t, nr, size)
    assert 0 <= req < 1 << 32
    assert (_IOC_DIR(req), _IOC_TYPE(req), _IOC_NR(req), _IOC_SIZE(req)) == (d, t, nr, size)


@given(req=st.integers(0, (1 << 32) - 1))
def test_decode_encode_round_trip(req: int) -> None:
    assert _IOC(_IOC_DIR(req), _IOC_TYPE(req), _IOC_NR(req), _IOC_SIZE(req)) == req


@given(t=st.integers(0, 255), nr=st.integers(0, 255), size=st.integers(0, (1 << 14) - 1))
def test_helpers_set_direction(t: int, nr: int, size: int) -> None:
    assert _IOC_DIR(_IO(t, nr)) == _IOC_NONE and _IOC_SIZE(_IO(t, nr)) == 0
    assert _IOC_DIR(_IOR(t, nr, size)) == _IOC_READ
    assert _IOC_DIR(_IOW(t, nr, size)) == _IOC_WRITE
    assert _IOC_DIR(_IOWR(t, nr, size)) == _IOC_READ | _IOC_WRITE
    assert _IOR(t, nr, size) | _IOW(t, nr, size) == _IOWR(t, nr, size)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_against_linux_ioctl_h(tmp_path: Path) -> None:
    """Differential: the same 200 (dir, type, nr, size) through <linux/ioctl.h>'s _IOC."""
    rng = random.Random(1)
    cases = [
        (rng.randrange(4), rng.randrange(256), rng.randrange(256), rng.randrange(1 << 14))
        for _ in range(200)
    ]
    body = "\n".join(
        f'  printf("%u\\n", (unsigned)_IOC({d}, {t}, {n}, {s}));' for d, t, n, s in cases
    )
    src = (
        "#include <stdio.h>\n#include <linux/ioctl.h>\n"
        f"int main(void)\n{{\n{body}\n  return 0;\n}}\n"
    )
    (tmp_path / "ioc.c").write_text(src)
    subprocess.run(
        ["gcc", "-Wall", "-Werror", "-o", str(tmp_path / "ioc"), str(tmp_path / "ioc.c")],
        check=True,
    )
    out = subprocess.run([str(tmp_path / "ioc")], capture_output=True, text=True, check=True)
    assert [int(x) for x in out.stdout.split()] == [_IOC(*c) for c in cases]
