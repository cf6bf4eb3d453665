"""Helpers for the PAMU backend tests: the SDK/seed calls, buffers, and hardware probes.

Every call goes through ``Kernel.ioctl`` with the uapi structs, as a client would.  The
probes (``translate``, ``paace``) read the PAMU tables through hw/pamu.py, so a test that
checks them sees what the device would see.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import mmap
import os
from dataclasses import dataclass
from typing import Any

from vfio_helpers import expect_errno  # noqa: F401 - re-exported for the tests

from vfiosim import Kernel
from vfiosim.hw.iommu import IommuFault
from vfiosim.kernel.caps import walk_chain
from vfiosim.kernel.iommu.pamu import PamuBackend
from vfiosim.uapi import vfio as V
from vfiosim.uapi import vfio_pamu as P

R = V.VFIO_DMA_MAP_FLAG_READ
W = V.VFIO_DMA_MAP_FLAG_WRITE
RW = R | W
MiB = 1 << 20
KiB = 1 << 10
APERTURE_MAX = (1 << 36) - 1

# Physical MSI register addresses of the presets (SPEC §2.2, §2.3).
P4080_MSIIR = [0xF_FE04_4140, 0xF_FE04_5140, 0xF_FE04_6140]
T4240_MSIIR = [0xF_FE04_4148, 0xF_FE04_5148, 0xF_FE04_6148, 0xF_FE04_7148]



# ---------------------------------------------------------------------------------------------
# A PAMU container


@dataclass
class Pamu:
    """A kernel with one or more groups attached to a PAMU container."""

    k: Kernel
    cfd: int
    gfds: dict[int, int]

    @property
    def backend(self) -> PamuBackend:
        b = self.k._file(self.cfd).container.backend  # type: ignore[attr-defined]
        assert isinstance(b, PamuBackend)
        return b

    @property
    def machine(self) -> Any:
        return self.k.machine

    def liodn(self, group: int) -> int:
        return next(d.rid for d in self.machine.devices if d.group == group)

    # -- ioctls ---------------------------------------------------------------------------
    def ioctl(self, request: int, arg: Any = 0) -> int:
        return self.k.ioctl(self.cfd, request, arg)

    def set_attr(self, attribute: int, *, argsz: int = 32, flags: int = 0, **fields: int) -> int:
        a = make_attr(attribute, argsz=argsz, flags=flags, **fields)
        return self.ioctl(P.VFIO_IOMMU_PAMU_SET_ATTR, a)

    def set_geometry(self, start: int, end: int) -> int:
        return self.set_attr(P.VFIO_ATTR_GEOMETRY, aperture_start=start, aperture_end=end)

    def set_windows(self, n: int) -> int:
        return self.set_attr(P.VFIO_ATTR_WINDOWS, windows=n)

    def set_stash(self, cpu: int, cache: int) -> int:
        return self.set_attr(P.VFIO_ATTR_PAMU_STASH, cpu=cpu, cache=cache)

    def get_attr(self, attribute: int, *, argsz: int = 32, flags: int = 0) -> P.vfio_pamu_attr:
        a = make_attr(attribute, argsz=argsz, flags=flags)
        assert self.ioctl(P.VFIO_IOMMU_PAMU_GET_ATTR, a) == 0
        return a

    def geometry(self) -> tuple[int, int]:
        a = self.get_attr(P.VFIO_ATTR_GEOMETRY)
        return a.attr_info.attr.aperture_start, a.attr_info.attr.aperture_end

    def windows(self) -> int:
        return self.get_attr(P.VFIO_ATTR_WINDOWS).attr_info.windows

    def stash(self) -> tuple[int, int]:
        a = self.get_attr(P.VFIO_ATTR_PAMU_STASH)
        return a.attr_info.stash.cpu, a.attr_info.stash.cache

    def bank_count(self) -> int:
        return self.ioctl(P.VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT)

    def map_dma(self, vaddr: int, iova: int, size: int, flags: int = RW, argsz: int = 32) -> int:
        m = V.vfio_iommu_type1_dma_map(argsz=argsz, flags=flags, vaddr=vaddr, iova=iova,
                                       size=size)
        return self.ioctl(V.VFIO_IOMMU_MAP_DMA, m)

    def unmap_dma(self, iova: int, size: int, flags: int = 0, argsz: int = 24) -> int:
        """Returns the ``size`` the kernel wrote back."""
        u = V.vfio_iommu_type1_dma_unmap(argsz=argsz, flags=flags, iova=iova, size=size)
        assert self.ioctl(V.VFIO_IOMMU_UNMAP_DMA, u) == 0
        return u.size

    def map_msi_bank(self, bank: int, iova: int, flags: int = RW, argsz: int = 24) -> int:
        m = P.vfio_pamu_msi_bank_map(argsz=argsz, flags=flags, msi_bank_index=bank, iova=iova)
        return self.ioctl(P.VFIO_IOMMU_PAMU_MAP_MSI_BANK, m)

    def unmap_msi_bank(self, iova: int, flags: int = 0, argsz: int = 16) -> int:
        u = P.vfio_pamu_msi_bank_unmap(argsz=argsz, flags=flags, iova=iova)
        return self.ioctl(P.VFIO_IOMMU_PAMU_UNMAP_MSI_BANK, u)

    # -- hardware probes ----------------------------------------------------------------------
    def translate(self, group: int, iova: int, size: int = 4, write: bool = False
                  ) -> list[tuple[int, int]] | None:
        """What PAMU does with a transaction of the group's LIODN: the physical pieces, or
        None for an access violation."""
        try:
            return self.machine.pamu.translate(self.liodn(group), iova, size, write)
        except IommuFault:
            return None

    def paace(self, group: int) -> dict[str, Any]:
        return self.machine.pamu.paace_fields(self.liodn(group))

    def spaace(self, group: int, window: int) -> dict[str, Any]:
        """Decoded SPAACE of window ``window`` (> 0) of the group's LIODN."""
        d = self.machine.pamu.dump(self.liodn(group))
        return next(s for s in d["spaaces"] if s["window"] == window)


def make_attr(attribute: int, *, argsz: int = 32, flags: int = 0, **fields: int
              ) -> P.vfio_pamu_attr:
    a = P.vfio_pamu_attr(argsz=argsz, flags=flags, attribute=attribute)
    info = a.attr_info
    for name, value in fields.items():
        if name in ("aperture_start", "aperture_end"):
            setattr(info.attr, name, value)
        elif name in ("cpu", "cache"):
            setattr(info.stash, name, value)
        else:
            setattr(info, name, value)
    return a


def open_pamu(k: Kernel, groups: tuple[int, ...] = (1,), set_iommu: bool = True) -> Pamu:
    """Container + groups attached + SET_IOMMU(VFIO_FSL_PAMU_IOMMU)."""
    cfd = k.open("/dev/vfio/vfio", os.O_RDWR)
    gfds = {}
    for g in groups:
        gfd = k.open(f"/dev/vfio/{g}", os.O_RDWR)
        k.ioctl(gfd, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(cfd))
        gfds[g] = gfd
    if set_iommu:
        assert k.ioctl(cfd, V.VFIO_SET_IOMMU, P.VFIO_FSL_PAMU_IOMMU) == 0
    return Pamu(k, cfd, gfds)


def get_info(p: Pamu, argsz: int = 256) -> tuple[V.vfio_iommu_type1_info, bytearray]:
    """GET_INFO with a buffer of max(argsz, 24) bytes whose argsz field says ``argsz``."""
    buf = bytearray(max(argsz, 24))
    buf[0:4] = argsz.to_bytes(4, "little")
    p.ioctl(V.VFIO_IOMMU_GET_INFO, buf)
    info = V.vfio_iommu_type1_info.from_buffer_copy(bytes(buf[:24]).ljust(24, b"\0"))
    return info, buf


def iova_ranges(buf: bytes, info: V.vfio_iommu_type1_info) -> list[tuple[int, int]] | None:
    """The IOVA_RANGE capability of a GET_INFO answer, None when absent."""
    for cap in walk_chain(bytes(buf), info.cap_offset, info.argsz):
        if cap.id == V.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
            n = int.from_bytes(cap.body[0:4], "little")
            out = []
            for i in range(n):
                r = V.vfio_iova_range.from_buffer_copy(cap.body[8 + 16 * i: 24 + 16 * i])
                out.append((r.start, r.end))
            return out
    return None


# ---------------------------------------------------------------------------------------------
# User memory


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MAP_HUGETLB = 0x40000
MAP_FAILED = ctypes.c_void_p(-1).value


class Buffer:
    """Anonymous user memory at an address aligned to ``align`` (4 KiB pages), or hugetlb
    memory (2 MiB pages) with ``hugetlb=True``."""

    def __init__(self, size: int, align: int = 4096, hugetlb: bool = False) -> None:
        self.size = size
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        if hugetlb:
            self._len = size
            addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                              flags | MAP_HUGETLB, -1, 0)
            if addr in (None, MAP_FAILED):
                raise OSError(ctypes.get_errno(), "mmap(MAP_HUGETLB)")
            self._base = addr
            self.addr = addr
        else:
            self._len = size + align
            addr = _libc.mmap(None, self._len, mmap.PROT_READ | mmap.PROT_WRITE, flags, -1, 0)
            if addr in (None, MAP_FAILED):
                raise OSError(ctypes.get_errno(), "mmap")
            self._base = addr
            self.addr = (addr + align - 1) & ~(align - 1)
        ctypes.memset(self.addr, 0, min(size, 4096))  # touch the first page

    def protect_readonly(self, offset: int = 0, size: int | None = None) -> None:
        """mprotect(PROT_READ) on [addr + offset, addr + offset + size)."""
        n = self.size - offset if size is None else size
        assert _libc.mprotect(self.addr + offset, n, mmap.PROT_READ) == 0

    def close(self) -> None:
        if self._base is not None:
            _libc.munmap(self._base, self._len)
            self._base = None


_NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"
_original_nr: int | None = None


def _restore_nr_hugepages() -> None:
    if _original_nr is not None:
        with contextlib.suppress(OSError), open(_NR_HUGEPAGES, "w") as f:
            f.write(str(_original_nr))


def reserve_hugepages(n: int = 8) -> bool:
    """Make sure ``n`` free 2 MiB huge pages exist (root may raise nr_hugepages; the value the
    machine had is put back when the test process exits)."""
    global _original_nr
    def free() -> int:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("HugePages_Free:"):
                    return int(line.split()[1])
        return 0

    if free() >= n:
        return True
    try:
        with open(_NR_HUGEPAGES) as f:
            total = int(f.read())
        if _original_nr is None:
            _original_nr = total
            atexit.register(_restore_nr_hugepages)
        with open(_NR_HUGEPAGES, "w") as f:
            f.write(str(total + n - free()))
    except OSError:
        return False
    return free() >= n
