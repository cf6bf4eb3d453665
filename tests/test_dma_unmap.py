"""VFIO_IOMMU_UNMAP_DMA on Type1 v1 and v2 (SPEC §5.2, §13.3)."""

from __future__ import annotations

import errno
import random

import pytest
from type1_helpers import (
    PAGE,
    U64_MAX,
    Buf,
    backend,
    check_consistency,
    dma_map,
    dma_unmap,
    errno_of,
    kernel,
    type1_container,
)

from vfiosim.uapi.vfio import (
    VFIO_DMA_UNMAP_FLAG_ALL,
    VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
    VFIO_DMA_UNMAP_FLAG_VADDR,
    VFIO_IOMMU_UNMAP_DMA,
    sizeof,
    vfio_iommu_type1_dma_unmap,
)

VERSIONS = ["v1", "v2"]


@pytest.fixture
def buf():
    b = Buf(64 * PAGE)
    yield b
    b.close()


def unmapping(k, fd, iova, size, flags=0, argsz=24):
    """errno of an UNMAP_DMA, and the struct as the kernel left it."""
    u = vfio_iommu_type1_dma_unmap(argsz=argsz, flags=flags, iova=iova, size=size)
    return errno_of(lambda: k.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, u)), u


def iovas(k, fd):
    return [(d.iova, d.size) for d in backend(k, fd).mappings()]


@pytest.mark.parametrize("version", VERSIONS)
def test_unmapped_size_written_back(version, buf):
    with kernel() as k:
        fd = type1_container(k, version)
        dma_map(k, fd, buf.va, 0x10_0000, 16 * PAGE)
        err, u = unmapping(k, fd, 0x10_0000, 16 * PAGE)
        assert err == 0 and u.size == 16 * PAGE
        # nothing mapped there any more: success, size 0
        err, u = unmapping(k, fd, 0x10_0000, 16 * PAGE)
        assert err == 0 and u.size == 0
        check_consistency(k, backend(k, fd))


@pytest.mark.parametrize("version", VERSIONS)
def test_argsz_flags_and_alignment(version, buf):
    with kernel() as k:
        fd = type1_container(k, version)
        dma_map(k, fd, buf.va, 0, 4 * PAGE)
        cases = {
            "argsz 23": dict(iova=0, size=PAGE, argsz=23),
            "unknown flag": dict(iova=0, size=PAGE, flags=8),
            "size 0": dict(iova=0, size=0),
            "misaligned iova": dict(iova=0x800, size=PAGE),
            "misaligned size": dict(iova=0, size=PAGE + 0x800),
            "ALL with iova": dict(iova=PAGE, size=0, flags=VFIO_DMA_UNMAP_FLAG_ALL),
            "ALL with size": dict(iova=0, size=PAGE, flags=VFIO_DMA_UNMAP_FLAG_ALL),
            "dirty with ALL": dict(iova=0, size=0, flags=VFIO_DMA_UNMAP_FLAG_ALL
                                   | VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP),
            "dirty with VADDR": dict(iova=0, size=PAGE, flags=VFIO_DMA_UNMAP_FLAG_VADDR
                                     | VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP),
            "dirty without room for the bitmap": dict(
                iova=0, size=PAGE, flags=VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, argsz=47),
            "VADDR (not modelled)": dict(iova=0, size=PAGE, flags=VFIO_DMA_UNMAP_FLAG_VADDR),
        }
        for name, kw in cases.items():
            err, u = unmapping(k, fd, **kw)
            assert err == errno.EINVAL, name
            assert u.size == kw["size"], f"{name}: a failed unmap writes nothing back"
        assert iovas(k, fd) == [(0, 4 * PAGE)]
        # argsz exactly minsz works; trailing bytes are untouched
        dma_map(k, fd, buf.va, 0x10_0000, PAGE)
        raw = bytearray(bytes(vfio_iommu_type1_dma_unmap(argsz=40, iova=0x10_0000, size=PAGE))
                        + b"\x5a" * 16)
        assert k.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, raw) == 0
        assert raw[24:] == b"\x5a" * 16
        check_consistency(k, backend(k, fd))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kver,expect", [("6.18", errno.EOVERFLOW), ("6.1", errno.EINVAL)])
def test_wrap(version, kver, expect):
    """§5.2 rule 9 / §2.7 #19: EOVERFLOW on 6.18, after the alignment and size checks."""
    with kernel(kernel=kver) as k:
        fd = type1_container(k, version)
        top = U64_MAX + 1 - PAGE
        assert unmapping(k, fd, top, 2 * PAGE)[0] == expect
        assert unmapping(k, fd, top + 0x800, 2 * PAGE)[0] == errno.EINVAL  # alignment first
        assert unmapping(k, fd, top, 2 * PAGE + 1)[0] == errno.EINVAL  # size rule first


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kver,removed", [("6.18", True), ("6.1", False)])
def test_range_ending_at_2_64(version, kver, removed, buf):
    """§2.7 #20: `iova + size` = 2^64 removes the mappings on 6.18; older kernels compute 0
    and remove nothing (success, size 0)."""
    with kernel(kernel=kver) as k:
        fd = type1_container(k, version)
        dma_map(k, fd, buf.va, PAGE, PAGE)
        dma_map(k, fd, buf.va, 0x10_0000, 2 * PAGE)
        err, u = unmapping(k, fd, PAGE, U64_MAX + 1 - PAGE)
        assert err == 0
        assert u.size == (3 * PAGE if removed else 0)
        assert iovas(k, fd) == ([] if removed else [(PAGE, PAGE), (0x10_0000, 2 * PAGE)])
        check_consistency(k, backend(k, fd))


def test_v1_unmap_inside_a_mapping_unmaps_nothing(buf):
    with kernel() as k:
        fd = type1_container(k, "v1")
        dma_map(k, fd, buf.va, 0x10_0000, 8 * PAGE)
        err, u = unmapping(k, fd, 0x10_0000 + PAGE, 2 * PAGE)
        assert (err, u.size) == (0, 0)
        err, u = unmapping(k, fd, 0x10_0000 + PAGE, 16 * PAGE)
        assert (err, u.size) == (0, 0)
        assert iovas(k, fd) == [(0x10_0000, 8 * PAGE)]


def test_v1_unmap_covering_the_first_iova_removes_whole_mappings(buf):
    with kernel() as k:
        fd = type1_container(k, "v1")
        dma_map(k, fd, buf.va, 0x10_0000, 8 * PAGE)
        dma_map(k, fd, buf.va, 0x20_0000, 4 * PAGE)
        err, u = unmapping(k, fd, 0x10_0000, PAGE)
        assert (err, u.size) == (0, 8 * PAGE)
        # starts before the mapping, covers its first page only
        err, u = unmapping(k, fd, 0x20_0000 - PAGE, 2 * PAGE)
        assert (err, u.size) == (0, 4 * PAGE)
        assert iovas(k, fd) == []
        check_consistency(k, backend(k, fd))


def test_v2_bisecting_unmap_einval(buf):
    with kernel() as k:
        fd = type1_container(k, "v2")
        dma_map(k, fd, buf.va, 0x10_0000, 8 * PAGE)
        dma_map(k, fd, buf.va, 0x20_0000, 4 * PAGE)
        for iova, size in [(0x10_0000 + PAGE, 7 * PAGE), (0x10_0000, 4 * PAGE),
                           (0x10_0000 + PAGE, 2 * PAGE), (0x10_0000, 0x10_0000 + PAGE),
                           (0x10_0000 - PAGE, 2 * PAGE)]:
            err, u = unmapping(k, fd, iova, size)
            assert err == errno.EINVAL, (hex(iova), size)
            assert u.size == size
        assert iovas(k, fd) == [(0x10_0000, 8 * PAGE), (0x20_0000, 4 * PAGE)]
        # covering several whole mappings, with room around them
        err, u = unmapping(k, fd, 0x0F_0000, 0x20_0000)
        assert (err, u.size) == (0, 12 * PAGE)
        # empty range
        assert unmapping(k, fd, 0x10_0000, PAGE)[1].size == 0
        check_consistency(k, backend(k, fd))


@pytest.mark.parametrize("version", VERSIONS)
def test_unmap_all(version, buf):
    with kernel() as k:
        fd = type1_container(k, version)
        err, u = unmapping(k, fd, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL)
        assert (err, u.size) == (0, 0)  # works on an empty container
        for i in range(5):
            dma_map(k, fd, buf.va, i * 0x10_0000, (i + 1) * PAGE)
        dma_map(k, fd, buf.va, (1 << 48) - PAGE, PAGE)
        err, u = unmapping(k, fd, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL)
        assert (err, u.size) == (0, 16 * PAGE)
        assert iovas(k, fd) == []
        assert k.machine.bus.pinned_bytes() == 0
        check_consistency(k, backend(k, fd))


def test_unmap_all_before_5_12():
    """§2.7 #8: ALL is an unknown flag before 5.12."""
    with kernel(kernel="5.10") as k:
        fd = type1_container(k, "v2")
        assert unmapping(k, fd, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL)[0] == errno.EINVAL


@pytest.mark.parametrize("version", VERSIONS)
def test_page_by_page_shuffled(version, buf):
    """[selftest]: 64 single-page maps unmapped in random order."""
    with kernel() as k:
        fd = type1_container(k, version)
        for i in range(64):
            dma_map(k, fd, buf.va + i * PAGE, 0x100_0000 + i * PAGE, PAGE)
        order = list(range(64))
        random.Random(1234).shuffle(order)
        for n, i in enumerate(order):
            assert dma_unmap(k, fd, 0x100_0000 + i * PAGE, PAGE) == PAGE
            assert len(backend(k, fd).mappings()) == 63 - n
            if n % 16 == 0:
                check_consistency(k, backend(k, fd))
        assert k.machine.bus.pinned_bytes() == 0


@pytest.mark.parametrize("kver,stops", [("5.19", True), ("6.0", False), ("6.18", False)])
def test_owner_rule(kver, stops, buf):
    """§2.7 #6: before 6.0 the walk stops at a mapping another process created."""
    with kernel(kernel=kver) as k:
        fd = type1_container(k, "v2")
        me = k.process.pid
        dma_map(k, fd, buf.va, 0x10_0000, PAGE)
        dma_map(k, fd, buf.va, 0x20_0000, PAGE)
        dma_map(k, fd, buf.va, 0x30_0000, PAGE)
        b = backend(k, fd)
        other = me + 100000
        # pretend the middle mapping belongs to another process (as if mapped through a
        # shared container fd), moving its locked_vm accounting along
        dma = b.dma_list[0x20_0000]
        dma.owner = other
        k.machine.locked_vm[me] -= PAGE
        k.machine.locked_vm[other] = PAGE
        err, u = unmapping(k, fd, 0, 0x40_0000)
        assert err == 0
        if stops:
            assert u.size == PAGE
            assert iovas(k, fd) == [(0x20_0000, PAGE), (0x30_0000, PAGE)]
        else:
            assert u.size == 3 * PAGE
            assert iovas(k, fd) == []
        check_consistency(k, b)


def test_failed_unmap_writes_nothing_back_and_struct_size(buf):
    with kernel() as k:
        fd = type1_container(k, "v2")
        assert sizeof(vfio_iommu_type1_dma_unmap) == 24
        dma_map(k, fd, buf.va, 0x10_0000, 2 * PAGE)
        raw = bytearray(bytes(vfio_iommu_type1_dma_unmap(argsz=24, iova=0x10_0000 + PAGE,
                                                         size=PAGE)))
        before = bytes(raw)
        assert errno_of(lambda: k.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, raw)) == errno.EINVAL
        assert bytes(raw) == before


@pytest.mark.parametrize("kver,size", [("5.10", 2 * PAGE), ("5.11", 2 * PAGE),
                                       ("5.12", 0), ("6.18", 0)])
def test_v1_walk_order_before_5_12(kver, size, buf):
    """Before 5.12 vfio_dma_do_unmap() walked with vfio_find_dma(iova, size), which returns
    the overlapping mapping highest in the rb-tree, not the first in IOVA order.  Three maps
    in IOVA order leave B at the root (A left, C right); an unmap from inside A finds B, then
    C (root after B's erase), then A, which starts before iova: 2 pages gone.  From 5.12 the
    walk starts at vfio_find_dma_first_node() (A) and stops at once."""
    with kernel(kernel=kver) as k:
        fd = type1_container(k, "v1")
        for iova, n in [(0x10_0000, 2), (0x10_2000, 1), (0x10_3000, 1)]:  # A, B, C
            dma_map(k, fd, buf.va, iova, n * PAGE)
        err, u = unmapping(k, fd, 0x10_0000 + PAGE, 3 * PAGE)
        assert (err, u.size) == (0, size)
        if size:
            assert iovas(k, fd) == [(0x10_0000, 2 * PAGE)]
        check_consistency(k, backend(k, fd))
