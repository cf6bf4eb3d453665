"""Shared helpers of the Type1 tests (SPEC §5, §13.3): containers, real user buffers, the
MAP/UNMAP/GET_INFO calls and a consistency check of the backend against the page table."""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
from collections.abc import Callable, Iterator
from typing import Any

import vfiosim
from vfiosim.kernel.iommu.type1 import Type1Backend
from vfiosim.uapi.vfio import (
    VFIO_DMA_MAP_FLAG_READ,
    VFIO_DMA_MAP_FLAG_WRITE,
    VFIO_GROUP_SET_CONTAINER,
    VFIO_IOMMU_GET_INFO,
    VFIO_IOMMU_MAP_DMA,
    VFIO_IOMMU_UNMAP_DMA,
    VFIO_SET_IOMMU,
    VFIO_TYPE1_IOMMU,
    VFIO_TYPE1v2_IOMMU,
    sizeof,
    vfio_iommu_type1_dma_map,
    vfio_iommu_type1_dma_unmap,
)

PAGE = 4096
RW = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE
VERSIONS = {"v1": VFIO_TYPE1_IOMMU, "v2": VFIO_TYPE1v2_IOMMU}
MSI_START, MSI_LAST = 0xFEE0_0000, 0xFEEF_FFFF
APERTURE_LAST = (1 << 48) - 1
U64_MAX = (1 << 64) - 1


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FAILED = ctypes.c_void_p(-1).value


class Buf:
    """``size`` bytes of anonymous memory from mmap(2): real user memory at ``va``.

    Pages can be made read-only or unmapped to make pinning fail.  ``close`` unmaps what is
    left, page by page, so a hole is never unmapped twice."""

    def __init__(self, size: int) -> None:
        self.size = size
        va = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                        mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        assert va != MAP_FAILED
        self.va: int = va
        self._holes: set[int] = set()
        self._open = True

    def write(self, offset: int, data: bytes) -> None:
        ctypes.memmove(self.va + offset, data, len(data))

    def read(self, offset: int, n: int) -> bytes:
        return ctypes.string_at(self.va + offset, n)

    def readonly(self) -> Buf:
        """mprotect(PROT_READ): pinning it for device writes must fail (EFAULT)."""
        assert _libc.mprotect(self.va, self.size, mmap.PROT_READ) == 0
        return self

    def hole(self, page: int) -> Buf:
        """munmap page ``page``: pinning across it must fail (EFAULT)."""
        assert _libc.munmap(self.va + page * PAGE, PAGE) == 0
        self._holes.add(page)
        return self

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        for page in range(self.size // PAGE):
            if page not in self._holes:
                _libc.munmap(self.va + page * PAGE, PAGE)


#: A user address that is never mapped: below vm.mmap_min_addr (64 KiB by default).
UNMAPPED_VA = 0x1000


@contextlib.contextmanager
def kernel(**options: Any) -> Iterator[vfiosim.Kernel]:
    k = vfiosim.Kernel.from_preset("x86", clock="manual", **options)
    try:
        yield k
    finally:
        k.shutdown()


def open_type1(k: vfiosim.Kernel, version: int | str = "v2",
               group_index: int = 0) -> tuple[int, int]:
    """(container fd, group fd): group ``k.groups()[group_index]`` attached, SET_IOMMU done."""
    if isinstance(version, str):
        version = VERSIONS[version]
    fd = k.open("/dev/vfio/vfio", os.O_RDWR)
    g = k.open(f"/dev/vfio/{k.groups()[group_index]}", os.O_RDWR)
    k.ioctl(g, VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(fd))
    assert k.ioctl(fd, VFIO_SET_IOMMU, version) == 0
    return fd, g


def type1_container(k: vfiosim.Kernel, version: int | str = "v2", group_index: int = 0) -> int:
    """A container fd with group ``k.groups()[group_index]`` attached and SET_IOMMU done."""
    return open_type1(k, version, group_index)[0]


def backend(k: vfiosim.Kernel, fd: int) -> Type1Backend:
    b = k._file(fd).container.backend  # type: ignore[attr-defined]
    assert isinstance(b, Type1Backend)
    return b


def map_struct(vaddr: int, iova: int, size: int, flags: int = RW,
               argsz: int | None = None) -> vfio_iommu_type1_dma_map:
    return vfio_iommu_type1_dma_map(
        argsz=sizeof(vfio_iommu_type1_dma_map) if argsz is None else argsz,
        flags=flags, vaddr=vaddr, iova=iova, size=size)


def dma_map(k: vfiosim.Kernel, fd: int, vaddr: int, iova: int, size: int, flags: int = RW,
            argsz: int | None = None) -> int:
    return k.ioctl(fd, VFIO_IOMMU_MAP_DMA, map_struct(vaddr, iova, size, flags, argsz))


def dma_unmap(k: vfiosim.Kernel, fd: int, iova: int, size: int, flags: int = 0) -> int:
    """UNMAP_DMA; returns the ``size`` written back."""
    u = vfio_iommu_type1_dma_unmap(argsz=sizeof(vfio_iommu_type1_dma_unmap), flags=flags,
                                   iova=iova, size=size)
    assert k.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, u) == 0
    return u.size


def get_info(k: vfiosim.Kernel, fd: int, argsz: int, total: int | None = None,
             poison: int = 0xAA) -> bytearray:
    """GET_INFO into a ``total``-byte buffer (default argsz) filled with ``poison``."""
    buf = bytearray([poison]) * (argsz if total is None else total)
    buf[0:4] = argsz.to_bytes(4, "little")
    k.ioctl(fd, VFIO_IOMMU_GET_INFO, buf)
    return buf


def errno_of(fn: Callable[[], object]) -> int:
    """Run ``fn``; return the errno of the OSError it raises (0 if it returns)."""
    try:
        fn()
    except OSError as e:
        return e.errno
    return 0


def group_rids(k: vfiosim.Kernel, group_index: int = 0) -> list[int]:
    """Requester ids of the devices of ``k.groups()[group_index]``."""
    number = k.groups()[group_index]
    return [d.rid for d in k.machine.devices if d.group == number]


def fast_pinning_checks(k: vfiosim.Kernel) -> None:
    """Let a test make tens of thousands of maps of one long-lived buffer: parse
    /proc/self/maps once instead of at every MAP_DMA (the check itself is unchanged)."""
    from vfiosim.kernel.uaccess import check_vmas

    mm = k.process.mm
    vmas = mm.maps()
    mm.check = lambda addr, size, write: check_vmas(vmas, addr, size, write)  # type: ignore
    k.process.cap_ipc_lock = True


def check_consistency(k: vfiosim.Kernel, b: Type1Backend) -> None:
    """The backend's mappings, its page table, dma_avail and locked_vm agree."""
    dmas = b.mappings()
    prev_end = -1
    for d in dmas:
        assert d.size > 0 and d.iova % PAGE == 0 and d.size % PAGE == 0
        assert d.iova >= prev_end, "mappings overlap"
        prev_end = d.end
        assert b.iova_dma_valid(d.iova, d.end - 1)
    assert b.dma_avail == b.dma_entry_limit - len(dmas)
    assert b.dma_avail >= 0
    # the page table maps exactly the mapped pages, with each mapping's permission
    ext = b.domain.extents()
    covered = sorted((e[0], e[0] + e[1], e[3]) for e in ext)
    want: list[tuple[int, int, int]] = []
    for d in dmas:
        if want and want[-1][1] == d.iova and want[-1][2] == d.prot:
            want[-1] = (want[-1][0], d.end, d.prot)
        else:
            want.append((d.iova, d.end, d.prot))
    merged: list[tuple[int, int, int]] = []
    for lo, hi, prot in covered:
        if merged and merged[-1][1] == lo and merged[-1][2] == prot:
            merged[-1] = (merged[-1][0], hi, prot)
        else:
            merged.append((lo, hi, prot))
    assert merged == want
    # locked_vm counts each process's pinned bytes
    per_pid: dict[int, int] = {}
    for d in dmas:
        per_pid[d.owner] = per_pid.get(d.owner, 0) + d.size
    locked = {pid: n for pid, n in k.machine.locked_vm.items() if n}
    assert locked == per_pid
