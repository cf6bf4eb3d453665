"""VFIO_IOMMU_MAP_DMA on Type1 v1 and v2 (SPEC §5.1, §5.3, §5.5, §10.2, §13.3)."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest
from type1_helpers import (
    APERTURE_LAST,
    MSI_LAST,
    MSI_START,
    PAGE,
    RW,
    U64_MAX,
    UNMAPPED_VA,
    Buf,
    backend,
    check_consistency,
    dma_map,
    dma_unmap,
    errno_of,
    get_info,
    group_rids,
    kernel,
    map_struct,
    open_type1,
    type1_container,
    unlimited_memlock,
)

from vfiosim.hw.iommu import IommuFault
from vfiosim.kernel.caps import walk_chain
from vfiosim.uapi.vfio import (
    VFIO_DMA_MAP_FLAG_READ,
    VFIO_DMA_MAP_FLAG_VADDR,
    VFIO_DMA_MAP_FLAG_WRITE,
    VFIO_GROUP_SET_CONTAINER,
    VFIO_GROUP_UNSET_CONTAINER,
    VFIO_IOMMU_MAP_DMA,
    VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
    VFIO_SET_IOMMU,
    VFIO_TYPE1v2_IOMMU,
)

VERSIONS = ["v1", "v2"]


@pytest.fixture
def buf():
    b = Buf(1 << 20)
    yield b
    b.close()


def mapping(k, fd, vaddr, iova, size, flags=RW, argsz=None):
    return errno_of(lambda: dma_map(k, fd, vaddr, iova, size, flags, argsz))


@pytest.mark.parametrize("version", VERSIONS)
def test_map_unmap_real_memory(version, buf):
    """A mapping reaches this process's memory through the IOMMU (SPEC §10.2, §12.1)."""
    with kernel() as k:
        fd = type1_container(k, version)
        buf.write(0, b"hello, device")
        assert dma_map(k, fd, buf.va, 0x10_0000, buf.size) == 0
        rid = group_rids(k)[0]
        pieces = k.machine.iommu.translate(rid, 0x10_0000, buf.size, True)
        assert sum(n for _, n in pieces) == buf.size
        phys = pieces[0][0]
        assert k.machine.bus.read(phys, 13) == b"hello, device"
        k.machine.bus.write(phys + 100, b"from the device")
        assert buf.read(100, 15) == b"from the device"
        check_consistency(k, backend(k, fd))
        assert dma_unmap(k, fd, 0x10_0000, buf.size) == buf.size
        with pytest.raises(IommuFault):
            k.machine.iommu.translate(rid, 0x10_0000, PAGE, False)
        assert k.machine.bus.pinned_bytes() == 0
        assert k.machine.locked_vm.get(k.process.pid, 0) == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_permissions_reach_the_page_table(version, buf):
    with kernel() as k:
        fd = type1_container(k, version)
        rid = group_rids(k)[0]
        assert dma_map(k, fd, buf.va, 0, PAGE, VFIO_DMA_MAP_FLAG_READ) == 0
        assert dma_map(k, fd, buf.va + PAGE, PAGE, PAGE, VFIO_DMA_MAP_FLAG_WRITE) == 0
        k.machine.iommu.translate(rid, 0, PAGE, False)
        with pytest.raises(IommuFault):
            k.machine.iommu.translate(rid, 0, PAGE, True)
        k.machine.iommu.translate(rid, PAGE, PAGE, True)
        with pytest.raises(IommuFault):
            k.machine.iommu.translate(rid, PAGE, PAGE, False)
        # a transfer over both pages needs both permissions: all or nothing
        with pytest.raises(IommuFault):
            k.machine.iommu.translate(rid, 0, 2 * PAGE, False)
        # the interrupt window passes writes untranslated (§9.2)
        assert k.machine.iommu.translate(rid, MSI_START, 4, True) == [(MSI_START, 4)]
        check_consistency(k, backend(k, fd))


@pytest.mark.parametrize("version", VERSIONS)
def test_argsz_and_trailing_bytes(version, buf):
    """§3.7 rules 1-2: argsz 31 is EINVAL, 32 works, bytes past 32 are neither read nor
    written."""
    with kernel() as k:
        fd = type1_container(k, version)
        assert mapping(k, fd, buf.va, 0, PAGE, argsz=31) == errno.EINVAL
        assert mapping(k, fd, buf.va, 0, PAGE, argsz=0) == errno.EINVAL
        assert mapping(k, fd, buf.va, 0, PAGE, argsz=32) == 0
        raw = bytearray(bytes(map_struct(buf.va, PAGE, PAGE, argsz=48)) + b"\xa5" * 16)
        assert k.ioctl(fd, VFIO_IOMMU_MAP_DMA, raw) == 0
        assert raw[32:] == b"\xa5" * 16
        assert raw[:32] == bytes(map_struct(buf.va, PAGE, PAGE, argsz=48))
        # a buffer shorter than minsz cannot be read: EFAULT (§3.7 rule 4)
        short = bytes(map_struct(buf.va, 2 * PAGE, PAGE))[:24]
        assert errno_of(lambda: k.ioctl(fd, VFIO_IOMMU_MAP_DMA, bytearray(short))) == errno.EFAULT
        check_consistency(k, backend(k, fd))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kver", ["6.18", "6.1"])
def test_einval_cases(version, kver, buf):
    with kernel(kernel=kver) as k:
        fd = type1_container(k, version)
        cases = {
            "unknown flag": (buf.va, 0, PAGE, RW | 8),
            "no READ/WRITE": (buf.va, 0, PAGE, 0),
            "size 0": (buf.va, 0, 0, RW),
            "misaligned iova": (buf.va, 0x800, PAGE, RW),
            "misaligned vaddr": (buf.va + 0x10, 0, PAGE, RW),
            "misaligned size": (buf.va, 0, PAGE + 1, RW),
            "VADDR alone": (buf.va, 0, PAGE, VFIO_DMA_MAP_FLAG_VADDR),
            "VADDR with READ": (buf.va, 0, PAGE, VFIO_DMA_MAP_FLAG_VADDR | RW),
            "MSI window": (buf.va, MSI_START, PAGE, RW),
            "straddles the window start": (buf.va, MSI_START - PAGE, 2 * PAGE, RW),
            "straddles the window end": (buf.va, MSI_LAST + 1 - PAGE, 2 * PAGE, RW),
            "beyond the aperture": (buf.va, APERTURE_LAST + 1, PAGE, RW),
            "across the aperture end": (buf.va, APERTURE_LAST + 1 - PAGE, 2 * PAGE, RW),
        }
        for name, (va, iova, size, flags) in cases.items():
            assert mapping(k, fd, va, iova, size, flags) == errno.EINVAL, name
        assert backend(k, fd).mappings() == []
        check_consistency(k, backend(k, fd))


@pytest.mark.parametrize("version", VERSIONS)
def test_limits_of_the_valid_ranges(version, buf):
    """§13.3: the last page below the window, the first above it, the last of the aperture."""
    with kernel() as k:
        fd = type1_container(k, version)
        for iova in (MSI_START - PAGE, MSI_LAST + 1, APERTURE_LAST + 1 - PAGE, 0):
            assert mapping(k, fd, buf.va, iova, PAGE) == 0, hex(iova)
        check_consistency(k, backend(k, fd))
        assert dma_unmap(k, fd, APERTURE_LAST + 1 - PAGE, PAGE) == PAGE
        assert dma_unmap(k, fd, MSI_START - PAGE, PAGE) == PAGE


def test_reserved_regions_covering_the_aperture_fail_the_attach():
    """vfio_iommu_type1_attach_group(): vfio_iommu_resv_exclude() answers EINVAL when the
    group's reserved regions leave no valid IOVA range, so SET_IOMMU fails with it."""
    with kernel() as k:
        k.machine.iommu_config["reserved"] = [
            {"start": 0, "last": MSI_LAST, "type": "reserved"},
            {"start": MSI_LAST + 1, "last": APERTURE_LAST, "type": "msi"}]
        fd = k.open("/dev/vfio/vfio", os.O_RDWR)
        g = k.open(f"/dev/vfio/{k.groups()[0]}", os.O_RDWR)
        k.ioctl(g, VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(fd))
        assert errno_of(lambda: k.ioctl(fd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) \
            == errno.EINVAL
        assert group_rids(k, 0)  # the group's devices are not left pointing at a domain
        assert all(k.machine.iommu.domain_of(rid) is None for rid in group_rids(k, 0))


@pytest.mark.parametrize("version", VERSIONS)
def test_wrap_6_18(version, buf):
    """6.18: size 0, then wrap (EOVERFLOW), then READ/WRITE/VADDR, then alignment (§5.1)."""
    with kernel(kernel="6.18") as k:
        fd = type1_container(k, version)
        top = U64_MAX + 1 - PAGE
        assert mapping(k, fd, buf.va, top, 2 * PAGE) == errno.EOVERFLOW
        # a wrapping vaddr with a valid iova: the wrap check, not the range check
        assert mapping(k, fd, top, 0, 2 * PAGE) == errno.EOVERFLOW
        # the wrap is checked before READ/WRITE and before the alignment
        assert mapping(k, fd, buf.va, top, 2 * PAGE, flags=0) == errno.EOVERFLOW
        assert mapping(k, fd, buf.va, top + 1, 2 * PAGE) == errno.EOVERFLOW
        assert mapping(k, fd, buf.va, top, 2 * PAGE, flags=VFIO_DMA_MAP_FLAG_VADDR) \
            == errno.EOVERFLOW
        # size 0 comes before the wrap
        assert mapping(k, fd, buf.va, U64_MAX, 0) == errno.EINVAL
        # ending exactly at 2^64 is no wrap: the range check answers
        assert mapping(k, fd, buf.va, top, PAGE) == errno.EINVAL
        # unknown flags are checked first of all
        assert mapping(k, fd, buf.va, top, 2 * PAGE, flags=RW | 0x10) == errno.EINVAL


@pytest.mark.parametrize("version", VERSIONS)
def test_wrap_6_1(version, buf):
    """Profile 6.1: every check before the overlap answers EINVAL, wrap included (§2.7 #18)."""
    with kernel(kernel="6.1") as k:
        fd = type1_container(k, version)
        top = U64_MAX + 1 - PAGE
        assert mapping(k, fd, buf.va, top, 2 * PAGE) == errno.EINVAL
        assert mapping(k, fd, top, 0, 2 * PAGE) == errno.EINVAL
        assert mapping(k, fd, buf.va, top, 2 * PAGE, flags=0) == errno.EINVAL


def test_vaddr_flag_before_5_12(buf):
    """§2.7 #8: before 5.12 VADDR is an unknown flag (EINVAL at the flags check, before the
    6.18-only EOVERFLOW could apply; 5.10 has no EOVERFLOW anyway)."""
    with kernel(kernel="5.10") as k:
        fd = type1_container(k, "v2")
        assert mapping(k, fd, buf.va, 0, PAGE, VFIO_DMA_MAP_FLAG_VADDR) == errno.EINVAL
        assert mapping(k, fd, buf.va, 0, PAGE, VFIO_DMA_MAP_FLAG_VADDR | RW) == errno.EINVAL
        assert mapping(k, fd, buf.va, 0, PAGE) == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_overlap_eexist(version, buf):
    with kernel() as k:
        fd = type1_container(k, version)
        base = 0x40_0000
        assert mapping(k, fd, buf.va, base, 4 * PAGE) == 0
        for iova, size in [(base, 4 * PAGE), (base - PAGE, 2 * PAGE), (base + 3 * PAGE, 2 * PAGE),
                           (base + PAGE, PAGE), (base - PAGE, 6 * PAGE)]:
            assert mapping(k, fd, buf.va, iova, size) == errno.EEXIST, (hex(iova), size)
        # touching neighbours are fine
        assert mapping(k, fd, buf.va, base - PAGE, PAGE) == 0
        assert mapping(k, fd, buf.va, base + 4 * PAGE, PAGE) == 0
        # EEXIST comes before the valid-range check: overlapping and running into the window
        assert mapping(k, fd, buf.va, MSI_START - 2 * PAGE, PAGE) == 0
        assert mapping(k, fd, buf.va, MSI_START - 2 * PAGE, 4 * PAGE) == errno.EEXIST
        # and after the VADDR refusal (§5.1 rule 6 before rule 7)
        assert mapping(k, fd, buf.va, base, PAGE, VFIO_DMA_MAP_FLAG_VADDR) == errno.EINVAL
        check_consistency(k, backend(k, fd))


@pytest.mark.parametrize("kver", ["6.18", "5.10"])  # 5.10 also links/erases its rb-tree
@pytest.mark.parametrize("version", VERSIONS)
def test_efault_unmapped_vaddr(version, kver):
    with kernel(kernel=kver) as k:
        fd = type1_container(k, version)
        assert mapping(k, fd, UNMAPPED_VA, 0, PAGE) == errno.EFAULT
        b = Buf(4 * PAGE).hole(2)
        try:
            assert mapping(k, fd, b.va, 0, 4 * PAGE) == errno.EFAULT
            assert mapping(k, fd, b.va, 0, 2 * PAGE) == 0  # the part before the hole
            assert mapping(k, fd, b.va + 3 * PAGE, 0x10_0000, PAGE) == 0
        finally:
            b.close()
        # nothing of the failed map stays pinned or accounted
        check_consistency(k, backend(k, fd))
        assert k.machine.bus.pinned_bytes() == 3 * PAGE


@pytest.mark.parametrize("version", VERSIONS)
def test_efault_readonly_memory_for_device_writes(version):
    with kernel() as k:
        fd = type1_container(k, version)
        b = Buf(2 * PAGE).readonly()
        try:
            assert mapping(k, fd, b.va, 0, PAGE, VFIO_DMA_MAP_FLAG_WRITE) == errno.EFAULT
            assert mapping(k, fd, b.va, 0, PAGE, RW) == errno.EFAULT
            assert mapping(k, fd, b.va, 0, PAGE, VFIO_DMA_MAP_FLAG_READ) == 0
        finally:
            b.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_rlimit_memlock_enomem(version):
    with kernel() as k:
        fd = type1_container(k, version)
        k.process.cap_ipc_lock = False
        k.process.memlock_override = 8 * PAGE
        b = Buf(16 * PAGE)
        try:
            assert mapping(k, fd, b.va, 0, 6 * PAGE) == 0
            assert mapping(k, fd, b.va, 0x10_0000, 3 * PAGE) == errno.ENOMEM
            assert k.machine.locked_vm[k.process.pid] == 6 * PAGE
            assert mapping(k, fd, b.va, 0x10_0000, 2 * PAGE) == 0
            assert mapping(k, fd, b.va, 0x20_0000, PAGE) == errno.ENOMEM
            assert dma_unmap(k, fd, 0, 6 * PAGE) == 6 * PAGE
            assert mapping(k, fd, b.va, 0x20_0000, 6 * PAGE) == 0
            check_consistency(k, backend(k, fd))
            # CAP_IPC_LOCK: no limit, but the pages are still accounted
            k.process.cap_ipc_lock = True
            assert mapping(k, fd, b.va, 0x30_0000, 16 * PAGE) == 0
            assert k.machine.locked_vm[k.process.pid] == 24 * PAGE
            check_consistency(k, backend(k, fd))
        finally:
            b.close()


@pytest.mark.parametrize("hole,expect", [(1, errno.EFAULT), (2, errno.EFAULT), (3, errno.ENOMEM)])
def test_pinning_order_efault_vs_enomem(hole, expect):
    """§5.1 rules 10/11: pinning walks from the start; a page is looked up (EFAULT) before it
    is counted against the limit (ENOMEM), so the first failing page decides."""
    with kernel() as k:
        fd = type1_container(k, "v2")
        k.process.cap_ipc_lock = False
        k.process.memlock_override = 2 * PAGE  # pages 0 and 1 fit, page 2 is over
        b = Buf(4 * PAGE).hole(hole)
        try:
            assert mapping(k, fd, b.va, 0, 4 * PAGE) == expect
        finally:
            b.close()
        check_consistency(k, backend(k, fd))
        assert k.machine.bus.pinned_bytes() == 0


def test_dma_entry_limit_enospc():
    """The 65536th mapping fails with ENOSPC; DMA_AVAIL counts down to 0 (§5.1 rule 8)."""
    with kernel() as k:
        fd = type1_container(k, "v2")
        b = Buf(PAGE)
        unlimited_memlock(k)
        try:
            m = map_struct(b.va, 0, PAGE)
            for i in range(65535):
                m.iova = i * PAGE
                k.ioctl(fd, VFIO_IOMMU_MAP_DMA, m)
            m.iova = 65535 * PAGE
            assert errno_of(lambda: k.ioctl(fd, VFIO_IOMMU_MAP_DMA, m)) == errno.ENOSPC
            # ENOSPC comes after EEXIST and before the range check
            m.iova = 0
            assert errno_of(lambda: k.ioctl(fd, VFIO_IOMMU_MAP_DMA, m)) == errno.EEXIST
            m.iova = MSI_START
            assert errno_of(lambda: k.ioctl(fd, VFIO_IOMMU_MAP_DMA, m)) == errno.ENOSPC
            info = get_info(k, fd, 4096)
            caps = {c.id: c for c in walk_chain(info, 24, 4096)}
            assert int.from_bytes(caps[VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL].body[:4], "little") == 0
            assert dma_unmap(k, fd, 7 * PAGE, PAGE) == PAGE
            info = get_info(k, fd, 4096)
            caps = {c.id: c for c in walk_chain(info, 24, 4096)}
            assert int.from_bytes(caps[VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL].body[:4], "little") == 1
            m.iova = 65535 * PAGE
            assert k.ioctl(fd, VFIO_IOMMU_MAP_DMA, m) == 0
            check_consistency(k, backend(k, fd))
            assert k.machine.locked_vm[k.process.pid] == 65535 * PAGE
        finally:
            b.close()


def test_second_group_and_detach(buf):
    """Attaching a second group programs its devices' context entries; removing the last
    group unmaps and unpins everything (§5.3, §10.2)."""
    with kernel() as k:
        assert len(k.groups()) >= 2
        fd, g1 = open_type1(k, "v2")
        assert dma_map(k, fd, buf.va, 0x1000_0000, 4 * PAGE) == 0
        g2 = k.open(f"/dev/vfio/{k.groups()[1]}", os.O_RDWR)
        k.ioctl(g2, VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(fd))
        for rid in group_rids(k, 0) + group_rids(k, 1):
            assert k.machine.iommu.translate(rid, 0x1000_0000, 4 * PAGE, True)
        k.ioctl(g2, VFIO_GROUP_UNSET_CONTAINER)
        with pytest.raises(IommuFault):
            k.machine.iommu.translate(group_rids(k, 1)[0], 0x1000_0000, PAGE, True)
        assert k.machine.iommu.translate(group_rids(k, 0)[0], 0x1000_0000, PAGE, True)
        assert k.machine.bus.pinned_bytes() == 4 * PAGE
        b = backend(k, fd)
        k.ioctl(g1, VFIO_GROUP_UNSET_CONTAINER)
        assert b.mappings() == []
        assert k.machine.bus.pinned_bytes() == 0
        assert k.machine.locked_vm.get(k.process.pid, 0) == 0
        with pytest.raises(IommuFault):
            k.machine.iommu.translate(group_rids(k, 0)[0], 0x1000_0000, PAGE, True)


def test_release_on_close(buf):
    """Closing every fd releases the container: mappings unpinned (§10.2)."""
    with kernel() as k:
        fd, g = open_type1(k, "v1")
        assert dma_map(k, fd, buf.va, 0, buf.size) == 0
        k.close(g)
        k.close(fd)
        assert k.machine.bus.pinned_bytes() == 0
        assert k.machine.locked_vm.get(k.process.pid, 0) == 0
