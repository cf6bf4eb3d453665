"""VFIO_IOMMU_DIRTY_PAGES and UNMAP_DMA with GET_DIRTY_BITMAP on Type1 (SPEC §5.7, §5.2)."""

from __future__ import annotations

import ctypes
import errno
import struct

import pytest
from type1_helpers import (
    PAGE,
    U64_MAX,
    UNMAPPED_VA,
    Buf,
    backend,
    check_consistency,
    dma_map,
    errno_of,
    kernel,
    type1_container,
)

from vfiosim.uapi.vfio import (
    VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
    VFIO_IOMMU_DIRTY_PAGES,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_START,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP,
    VFIO_IOMMU_UNMAP_DMA,
)

START = VFIO_IOMMU_DIRTY_PAGES_FLAG_START
STOP = VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP
GET = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP


class Bitmap:
    """``nwords`` little-endian u64 words of real memory."""

    def __init__(self, nwords: int, fill: int = 0) -> None:
        self.words = (ctypes.c_uint64 * nwords)(*([fill] * nwords))
        self.addr = ctypes.addressof(self.words)
        self.size = nwords * 8

    def bits(self) -> int:
        return int.from_bytes(bytes(self.words), "little")


def dirty(k, fd, flags, argsz=8):
    return errno_of(lambda: k.ioctl(fd, VFIO_IOMMU_DIRTY_PAGES,
                                    bytearray(struct.pack("<II", argsz, flags))))


def get_bitmap(k, fd, iova, size, data, bsize, pgsize=PAGE, argsz=48, total=None):
    raw = struct.pack("<IIQQQQQ", argsz, GET, iova, size, pgsize, bsize, data)
    buf = bytearray(raw[:total] if total is not None else raw)
    return errno_of(lambda: k.ioctl(fd, VFIO_IOMMU_DIRTY_PAGES, buf))


def unmap_dirty(k, fd, iova, size, data, bsize, pgsize=PAGE, argsz=48):
    buf = bytearray(struct.pack("<IIQQQQQ", argsz, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
                                iova, size, pgsize, bsize, data))
    err = errno_of(lambda: k.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, buf))
    return err, struct.unpack_from("<Q", buf, 16)[0]


@pytest.fixture
def mapped():
    """A v2 container with mappings at pages 1-3, 10-11 and 70 (page = 4 KiB)."""
    b = Buf(8 * PAGE)
    with kernel() as k:
        fd = type1_container(k, "v2")
        dma_map(k, fd, b.va, 1 * PAGE, 3 * PAGE)
        dma_map(k, fd, b.va, 10 * PAGE, 2 * PAGE)
        dma_map(k, fd, b.va, 70 * PAGE, PAGE)
        yield k, fd
    b.close()


def test_v1_eacces_before_reading_the_argument():
    with kernel() as k:
        fd = type1_container(k, "v1")
        # an address that cannot be read: still EACCES (checked first)
        assert errno_of(lambda: k.ioctl(fd, VFIO_IOMMU_DIRTY_PAGES, UNMAPPED_VA)) == errno.EACCES
        assert dirty(k, fd, START) == errno.EACCES


def test_flags_and_argsz(mapped):
    k, fd = mapped
    assert dirty(k, fd, START, argsz=7) == errno.EINVAL
    assert dirty(k, fd, 0) == errno.EINVAL
    assert dirty(k, fd, START | STOP) == errno.EINVAL
    assert dirty(k, fd, START | GET) == errno.EINVAL
    assert dirty(k, fd, 8) == errno.EINVAL
    assert dirty(k, fd, START) == 0
    assert dirty(k, fd, START) == 0  # already on: nothing changes
    assert dirty(k, fd, STOP) == 0
    assert dirty(k, fd, STOP) == 0


def test_get_bitmap_reports_every_mapped_page_repeatedly(mapped):
    k, fd = mapped
    bm = Bitmap(2)
    assert get_bitmap(k, fd, 0, 128 * PAGE, bm.addr, bm.size) == errno.EINVAL  # tracking off
    assert dirty(k, fd, START) == 0
    want = 0b1110 | (0b11 << 10) | (1 << 70)
    for _ in range(3):
        bm = Bitmap(2)
        assert get_bitmap(k, fd, 0, 128 * PAGE, bm.addr, bm.size) == 0
        assert bm.bits() == want
    # a range that starts at a mapping: bit 0 is that mapping's first page
    bm = Bitmap(1)
    assert get_bitmap(k, fd, 10 * PAGE, 2 * PAGE, bm.addr, bm.size) == 0
    assert bm.bits() == 0b11
    # STOP forgets: GET_BITMAP is refused again
    assert dirty(k, fd, STOP) == 0
    assert get_bitmap(k, fd, 0, 128 * PAGE, bm.addr, bm.size) == errno.EINVAL


def test_whole_words_written_from_first_to_last_bit(mapped):
    """update_user_bitmap(): bits below a mapping's first bit in its first word keep their
    value; bits after its last bit in its last word are written 0; other words untouched."""
    k, fd = mapped
    assert dirty(k, fd, START) == 0
    ones = (1 << 64) - 1
    bm = Bitmap(3, fill=ones)
    assert get_bitmap(k, fd, 0, 192 * PAGE, bm.addr, bm.size) == 0
    w0, w1, w2 = bm.words
    # pages 1-3: word 0 keeps bit 0, gets bits 1-3, bits 4-63 written 0;
    # pages 10-11: word 0 read back (bits 0-9 kept), bits 10-11 set, 12-63 written 0
    assert w0 == 0b1111 | (0b11 << 10)
    # page 70: word 1 keeps bits 0-5 (the fill), bit 6 set, bits 7-63 written 0
    assert w1 == 0x7F
    assert w2 == ones  # never written


def test_get_bitmap_checks(mapped):
    k, fd = mapped
    assert dirty(k, fd, START) == 0
    bm = Bitmap(2)
    a, n = bm.addr, bm.size
    assert get_bitmap(k, fd, 0, 128 * PAGE, a, n, argsz=47) == errno.EINVAL
    assert get_bitmap(k, fd, 0, 128 * PAGE, a, n, total=40) == errno.EFAULT  # range unreadable
    assert get_bitmap(k, fd, 0, 0, a, n) == errno.EINVAL  # size 0
    assert get_bitmap(k, fd, U64_MAX + 1 - PAGE, 2 * PAGE, a, n) == errno.EOVERFLOW
    assert get_bitmap(k, fd, 0, 128 * PAGE, 1 << 47, 16) == errno.EINVAL  # not user memory
    assert get_bitmap(k, fd, 0, 128 * PAGE, a, 0) == errno.EINVAL
    assert get_bitmap(k, fd, 0, 128 * PAGE, a, 8) == errno.EINVAL  # too small
    assert get_bitmap(k, fd, 0, 128 * PAGE, a, 0x1000_0008) == errno.EINVAL  # too large
    assert get_bitmap(k, fd, 0, 128 * PAGE, a, n, pgsize=2 * PAGE) == errno.EINVAL
    assert get_bitmap(k, fd, 0x800, 128 * PAGE, a, n) == errno.EINVAL
    assert get_bitmap(k, fd, 0, 128 * PAGE + 0x800, a, n) == errno.EINVAL
    assert get_bitmap(k, fd, 2 * PAGE, 8 * PAGE, a, n) == errno.EINVAL  # bisects 1-3
    assert get_bitmap(k, fd, 0, 11 * PAGE, a, n) == errno.EINVAL  # bisects 10-11
    assert get_bitmap(k, fd, 0, 128 * PAGE, UNMAPPED_VA, n) == errno.EFAULT


def test_get_bitmap_wrap_and_size_0_on_6_1():
    """§2.7 #21: EINVAL for both before 6.18; a range ending at 2^64 counts as a wrap."""
    with kernel(kernel="6.1") as k:
        fd = type1_container(k, "v2")
        assert dirty(k, fd, START) == 0
        bm = Bitmap(2)
        assert get_bitmap(k, fd, U64_MAX + 1 - PAGE, 2 * PAGE, bm.addr, bm.size) == errno.EINVAL
        assert get_bitmap(k, fd, 0, 0, bm.addr, bm.size) == errno.EINVAL
        assert get_bitmap(k, fd, U64_MAX + 1 - PAGE, PAGE, bm.addr, bm.size) == errno.EINVAL
    with kernel(kernel="6.18") as k:
        fd = type1_container(k, "v2")
        assert dirty(k, fd, START) == 0
        bm = Bitmap(2)
        # no wrap on 6.18: the later checks answer (nothing mapped there: success)
        assert get_bitmap(k, fd, U64_MAX + 1 - PAGE, PAGE, bm.addr, bm.size) == 0


def test_unmap_with_dirty_bitmap(mapped):
    k, fd = mapped
    bm = Bitmap(2)
    # tracking off: EINVAL, nothing removed
    assert unmap_dirty(k, fd, 0, 64 * PAGE, bm.addr, bm.size)[0] == errno.EINVAL
    assert len(backend(k, fd).mappings()) == 3
    assert dirty(k, fd, START) == 0
    assert unmap_dirty(k, fd, 0, 64 * PAGE, bm.addr, bm.size, argsz=47)[0] == errno.EINVAL
    assert unmap_dirty(k, fd, 0, 64 * PAGE, bm.addr, 0)[0] == errno.EINVAL
    assert unmap_dirty(k, fd, 0, 64 * PAGE, 1 << 47, 8)[0] == errno.EINVAL
    assert unmap_dirty(k, fd, 0, 64 * PAGE, bm.addr, bm.size, pgsize=2 * PAGE)[0] \
        == errno.EINVAL
    # the bitmap cannot be written: EFAULT, the first mapping was not removed
    assert unmap_dirty(k, fd, 0, 64 * PAGE, UNMAPPED_VA, 8)[0] == errno.EFAULT
    assert len(backend(k, fd).mappings()) == 3
    err, size = unmap_dirty(k, fd, 0, 64 * PAGE, bm.addr, bm.size)
    assert (err, size) == (0, 5 * PAGE)
    assert bm.bits() == 0b1110 | (0b11 << 10)
    assert [d.iova for d in backend(k, fd).mappings()] == [70 * PAGE]
    check_consistency(k, backend(k, fd))


def test_v1_unmap_with_dirty_bitmap_einval():
    with kernel() as k:
        fd = type1_container(k, "v1")
        b = Buf(PAGE)
        try:
            dma_map(k, fd, b.va, 0, PAGE)
        finally:
            b.close()
        bm = Bitmap(1)
        assert unmap_dirty(k, fd, 0, PAGE, bm.addr, bm.size)[0] == errno.EINVAL
        assert len(backend(k, fd).mappings()) == 1


@pytest.mark.parametrize("kver,bits", [("5.10", 0b001), ("5.12", 0b111), ("6.18", 0b111)])
def test_unmap_bitmap_in_rb_tree_order_before_5_12(kver, bits):
    """Before 5.12 UNMAP_DMA takes mappings in rb-tree descent order (B at the root, then C,
    then A), and update_user_bitmap() writes whole words, zeroing the bits after a mapping's
    last bit: A, written last, clears the bits of B and C in the shared word."""
    b = Buf(PAGE)
    try:
        with kernel(kernel=kver) as k:
            fd = type1_container(k, "v2")
            for i in range(3):  # A, B, C: single pages 0, 1, 2
                dma_map(k, fd, b.va, i * PAGE, PAGE)
            assert dirty(k, fd, START) == 0
            bm = Bitmap(1)
            assert unmap_dirty(k, fd, 0, 3 * PAGE, bm.addr, bm.size) == (0, 3 * PAGE)
            assert bm.bits() == bits
            check_consistency(k, backend(k, fd))
    finally:
        b.close()


def test_unmap_bitmap_pgsize_0_shifts_by_nothing():
    """vfio_iommu_type1_unmap_dma(): ``unmap.size >> __ffs(bitmap.pgsize)`` with pgsize 0 is
    ``size >> 64`` on x86 (TZCNT gives 64, SHR masks the count to 0): the bitmap is checked
    against ``size`` pages, and a range that wraps then fails at the wrap (EOVERFLOW on
    6.18), not with EINVAL at verify_bitmap_size()."""
    with kernel(kernel="6.18") as k:
        fd = type1_container(k, "v2")
        assert dirty(k, fd, START) == 0
        bm = Bitmap(2 * PAGE // 64)  # 2 * PAGE bits: room for size >> 0 pages
        top = U64_MAX + 1 - PAGE
        assert unmap_dirty(k, fd, top, 2 * PAGE, bm.addr, bm.size, pgsize=0)[0] \
            == errno.EOVERFLOW
        # too small for size >> 0 pages: EINVAL at verify_bitmap_size()
        assert unmap_dirty(k, fd, top, 2 * PAGE, bm.addr, 8, pgsize=0)[0] == errno.EINVAL
        # passing verify_bitmap_size(), pgsize 0 still is not the IOMMU page size
        assert unmap_dirty(k, fd, 0, PAGE, bm.addr, bm.size, pgsize=0)[0] == errno.EINVAL


@pytest.mark.parametrize("kver,expect", [("6.3", errno.EINVAL), ("6.4", errno.EFAULT),
                                         ("6.11", errno.EFAULT), ("6.12", errno.EINVAL)])
def test_bitmap_above_task_size_max(kver, expect):
    """x86_64 access_ok(): from 6.4 to 6.11 valid_user_address() only asks for the lower half
    of the address space, so a bitmap at 2^47 passes the check (EINVAL elsewhere) and the
    write of the first word fails with EFAULT; 6.12 compares with USER_PTR_MAX again."""
    b = Buf(PAGE)
    try:
        with kernel(kernel=kver) as k:
            fd = type1_container(k, "v2")
            dma_map(k, fd, b.va, PAGE, PAGE)
            assert dirty(k, fd, START) == 0
            assert get_bitmap(k, fd, 0, 64 * PAGE, 1 << 47, 8) == expect
            assert unmap_dirty(k, fd, 0, 64 * PAGE, 1 << 47, 8)[0] == expect
            # nothing mapped in the range: nothing is written, so 6.4-6.11 succeed
            ok = 0 if expect == errno.EFAULT else errno.EINVAL
            assert unmap_dirty(k, fd, 0x100_0000, PAGE, 1 << 47, 8)[0] == ok
    finally:
        b.close()
