"""Type1 MAP_DMA / UNMAP_DMA of anonymous, 2 MiB hugetlb and 1 GiB hugetlb buffers; the unmapped
size equals the mapped size (SPEC §13.3 first bullet, after the VFIO selftest
vfio_dma_mapping_test.c's anonymous / anonymous_hugetlb_2mb / anonymous_hugetlb_1gb variants).

Huge pages come from the host: as root the fixture raises
``/sys/kernel/mm/hugepages/hugepages-<size>kB/nr_hugepages`` (for 2 MiB the same pool as
``/proc/sys/vm/nr_hugepages`` on x86) to have the pages free, and puts the old value back after
the test.  A test skips, naming the reason, only when the pages cannot be had: the size is not
supported, the pool cannot be raised (not root), the kernel found too few pages (1 GiB pages
rarely can be assembled in fragmented memory), or mmap(MAP_HUGETLB) fails.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
from collections.abc import Iterator

import pytest
from type1_helpers import (
    PAGE,
    backend,
    check_consistency,
    dma_map,
    dma_unmap,
    group_rids,
    kernel,
    type1_container,
)

from vfiosim.hw.iommu import IommuFault

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# include/uapi/asm-generic/mman-common.h, include/uapi/linux/mman.h
MAP_HUGETLB = 0x40000
MAP_HUGE_SHIFT = 26
MAP_HUGE_2MB = 21 << MAP_HUGE_SHIFT
MAP_HUGE_1GB = 30 << MAP_HUGE_SHIFT

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FAILED = ctypes.c_void_p(-1).value

#: variant -> (page size, pages, mmap flags beyond MAP_PRIVATE | MAP_ANONYMOUS)
VARIANTS = {
    "anonymous": (PAGE, 512, 0),
    "hugetlb_2mb": (2 * MiB, 2, MAP_HUGETLB | MAP_HUGE_2MB),
    "hugetlb_1gb": (1 * GiB, 1, MAP_HUGETLB | MAP_HUGE_1GB),
}


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def _write_int(path: str, value: int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


@pytest.fixture
def hugepages(request: pytest.FixtureRequest) -> Iterator[None]:
    """``n`` free huge pages of ``page_size`` bytes (indirect parameter), raising the pool if
    needed and restoring its size afterwards; anonymous memory needs nothing."""
    page_size, n = request.param
    if page_size == PAGE:
        yield
        return
    pool = f"/sys/kernel/mm/hugepages/hugepages-{page_size // KiB}kB"
    if not os.path.isdir(pool):
        pytest.skip(f"this kernel has no {page_size // MiB} MiB huge pages ({pool} missing)")
    free = _read_int(f"{pool}/free_hugepages")
    previous: int | None = None
    if free < n:
        previous = _read_int(f"{pool}/nr_hugepages")
        try:
            _write_int(f"{pool}/nr_hugepages", previous + n - free)
        except OSError as e:
            pytest.skip(f"{free} free {page_size // MiB} MiB huge pages, {n} needed, and "
                        f"{pool}/nr_hugepages cannot be raised: {e.strerror}")
        free = _read_int(f"{pool}/free_hugepages")
        if free < n:
            _write_int(f"{pool}/nr_hugepages", previous)
            pytest.skip(f"the kernel could assemble only {free} free {page_size // MiB} MiB "
                        f"huge pages of the {n} asked for (memory too fragmented)")
    try:
        yield
    finally:
        if previous is not None:
            _write_int(f"{pool}/nr_hugepages", previous)


class HugeBuf:
    """``size`` bytes of anonymous memory mapped with ``flags`` (4 KiB pages for 0)."""

    def __init__(self, size: int, flags: int) -> None:
        self.size = size
        addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                          mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | flags, -1, 0)
        if addr in (None, MAP_FAILED):
            err = ctypes.get_errno()
            pytest.skip(f"mmap of {size:#x} bytes with flags {flags:#x} failed: "
                        f"{errno.errorcode.get(err, err)} ({os.strerror(err)})")
        self.va = addr

    def write(self, offset: int, data: bytes) -> None:
        ctypes.memmove(self.va + offset, data, len(data))

    def read(self, offset: int, n: int) -> bytes:
        return ctypes.string_at(self.va + offset, n)

    def close(self) -> None:
        if self.va:
            _libc.munmap(self.va, self.size)
            self.va = 0


def _params() -> list[object]:
    out = []
    for version in ("v1", "v2"):
        for name, (page_size, n, flags) in VARIANTS.items():
            out.append(pytest.param(version, page_size, n, flags, (page_size, n),
                                    id=f"{version}-{name}"))
    return out


@pytest.mark.parametrize(("version", "page_size", "npages", "flags", "hugepages"), _params(),
                         indirect=["hugepages"])
def test_map_unmap_hugetlb(version: str, page_size: int, npages: int, flags: int,
                           hugepages: None) -> None:
    size = page_size * npages
    buf = HugeBuf(size, flags)
    try:
        with kernel() as k:
            # The model sees the backing the variant asked for (smaps KernelPageSize,
            # SPEC §10.3): the test really maps hugetlb memory.
            assert k.process.mm.page_size(buf.va) == page_size
            fd = type1_container(k, version)
            iova = 1 * GiB  # aligned to every variant's page size
            marks = [0, page_size // 2, size - 16]
            for off in marks:
                buf.write(off, off.to_bytes(8, "little") * 2)
            assert dma_map(k, fd, buf.va, iova, size) == 0
            b = backend(k, fd)
            assert [(d.iova, d.size) for d in b.mappings()] == [(iova, size)]
            check_consistency(k, b)
            # The device reaches the buffer at each mark, through the IOMMU and simulated RAM.
            rid = group_rids(k)[0]
            for off in marks:
                ((phys, n),) = k.machine.iommu.translate(rid, iova + off, 16, False)
                assert n == 16 and k.machine.bus.read(phys, 16) == off.to_bytes(8, "little") * 2
            k.machine.bus.write(k.machine.iommu.translate(rid, iova + size - 8, 8, True)[0][0],
                                b"device!!")
            assert buf.read(size - 8, 8) == b"device!!"
            # Unmapped size equals the mapped size.
            assert dma_unmap(k, fd, iova, size) == size
            assert b.mappings() == []
            with pytest.raises(IommuFault):
                k.machine.iommu.translate(rid, iova, 4, False)
            assert k.machine.bus.pinned_bytes() == 0
            assert k.machine.locked_vm.get(k.process.pid, 0) == 0
    finally:
        buf.close()
