"""PAMU MAP_DMA / UNMAP_DMA in both MSI modes, GET_INFO, and the seed flow of SPEC §6.9.

SPEC §6.5, §6.6, §6.8, §6.9, §10.3, §13.4.
"""

from __future__ import annotations

import errno
import struct

import pytest
from pamu_helpers import (
    APERTURE_MAX,
    P4080_MSIIR,
    RW,
    T4240_MSIIR,
    Buffer,
    KiB,
    MiB,
    Pamu,
    R,
    W,
    expect_errno,
    get_info,
    iova_ranges,
    open_pamu,
    reserve_hugepages,
)

from vfiosim.uapi import vfio as V

MODES = ["auto", "explicit"]


@pytest.fixture
def hugetlb() -> bool:
    if not reserve_hugepages(8):
        pytest.skip("no 2 MiB huge pages can be reserved (/proc/sys/vm/nr_hugepages)")
    return True


def configured(k, geometry: tuple[int, int] = (0, 32 * MiB - 1), windows: int = 16,
               groups: tuple[int, ...] = (1,)) -> Pamu:
    p = open_pamu(k, groups=groups)
    p.set_geometry(*geometry)
    p.set_windows(windows)
    return p


def window_kinds(p: Pamu) -> list[str]:
    return [w.kind for w in p.backend.window_table()]


# ---------------------------------------------------------------------------------------------
# MAP_DMA: checks in order (§6.5)


@pytest.mark.parametrize("mode", MODES)
def test_map_argsz_and_flags(make_kernel, mode: str) -> None:
    k = make_kernel("p4080", msi_mode=mode, contiguous_memory=True)
    p = configured(k)
    b = Buffer(2 * MiB)
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 0, 2 * MiB, RW, argsz=31)
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 0, 2 * MiB, RW | V.VFIO_DMA_MAP_FLAG_VADDR)
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 0, 2 * MiB, 1 << 31)
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 0, 2 * MiB, 0)
    assert p.map_dma(b.addr, 0, 2 * MiB, RW, argsz=32) == 0
    b.close()


@pytest.mark.parametrize("mode", MODES)
def test_map_before_windows_einval(make_kernel, mode: str) -> None:
    k = make_kernel("p4080", msi_mode=mode, contiguous_memory=True)
    p = open_pamu(k)
    b = Buffer(2 * MiB)
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 0, 2 * MiB)
    p.set_geometry(0, 32 * MiB - 1)
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 0, 2 * MiB)
    b.close()


@pytest.mark.parametrize("mode", MODES)
def test_map_size_alignment_wrap_einval(make_kernel, mode: str) -> None:
    k = make_kernel("p4080", msi_mode=mode, contiguous_memory=True)
    p = configured(k)
    b = Buffer(4 * MiB)
    for iova, size in [(0, 0), (0x1000, 2 * MiB), (MiB, 2 * MiB), (0, 2 * MiB + 4 * KiB),
                       (0, MiB), (0, 3 * MiB)]:
        expect_errno(errno.EINVAL, p.map_dma, b.addr, iova, size)
    # iova + size wraps past 2^64; vaddr + size wraps
    expect_errno(errno.EINVAL, p.map_dma, b.addr, (1 << 64) - 2 * MiB, 4 * MiB)
    expect_errno(errno.EINVAL, p.map_dma, (1 << 64) - MiB, 0, 2 * MiB)
    assert window_kinds(p) == ["free"] * 16
    b.close()


def test_map_auto_reserved_windows_einval(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = configured(k)
    b = Buffer(8 * MiB)
    for w in (13, 14, 15):
        expect_errno(errno.EINVAL, p.map_dma, b.addr, w * 2 * MiB, 2 * MiB)
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 12 * 2 * MiB, 4 * MiB)  # 12 and 13
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 32 * MiB, 2 * MiB)  # past the aperture
    assert p.map_dma(b.addr, 12 * 2 * MiB, 2 * MiB) == 0  # the last usable window
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 0x01A0_0000, 2 * MiB)  # §6.9
    b.close()


@pytest.mark.parametrize("preset,windows", [("p4080", 2), ("p4080", 4), ("t4240", 4),
                                            ("p4080", 1)])
def test_map_auto_windows_le_banks(make_kernel, preset: str, windows: int) -> None:
    k = make_kernel(preset, contiguous_memory=True)
    p = configured(k, windows=windows)
    banks = p.bank_count()
    b = Buffer(16 * MiB)
    ws = 32 * MiB // windows
    if windows <= banks:
        for w in range(windows):
            expect_errno(errno.EINVAL, p.map_dma, b.addr, w * ws, ws)
    else:
        assert p.map_dma(b.addr, 0, ws) == 0
        expect_errno(errno.EINVAL, p.map_dma, b.addr, (windows - banks) * ws, ws)
    b.close()


def test_map_explicit_outside_aperture_einval(make_kernel) -> None:
    k = make_kernel("p4080", msi_mode="explicit", contiguous_memory=True)
    p = configured(k, geometry=(64 * MiB, 96 * MiB - 1))
    b = Buffer(4 * MiB)
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 62 * MiB, 2 * MiB)
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 96 * MiB, 2 * MiB)
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 94 * MiB, 4 * MiB)
    assert p.map_dma(b.addr, 94 * MiB, 2 * MiB) == 0  # explicit: the top window is usable
    assert window_kinds(p)[15] == "dma"
    b.close()


@pytest.mark.parametrize("mode", MODES)
def test_map_overlap_ebusy(make_kernel, mode: str) -> None:
    k = make_kernel("p4080", msi_mode=mode, contiguous_memory=True)
    p = configured(k)
    b = Buffer(8 * MiB)
    p.map_dma(b.addr, 0, 4 * MiB)
    expect_errno(errno.EBUSY, p.map_dma, b.addr, 0x0020_0000, 2 * MiB)  # §6.9
    expect_errno(errno.EBUSY, p.map_dma, b.addr, 0, 4 * MiB)  # exact re-map
    expect_errno(errno.EBUSY, p.map_dma, b.addr, 2 * MiB, 4 * MiB)  # partial
    assert p.map_dma(b.addr + 4 * MiB, 4 * MiB, 2 * MiB) == 0  # adjacent
    assert [(m.iova, m.size) for m in p.backend.iter_dma()] == [(0, 4 * MiB), (4 * MiB, 2 * MiB)]
    b.close()


def test_map_explicit_bank_window_ebusy(make_kernel) -> None:
    k = make_kernel("p4080", msi_mode="explicit", contiguous_memory=True)
    p = configured(k)
    b = Buffer(4 * MiB)
    p.map_msi_bank(0, 2 * MiB)
    expect_errno(errno.EBUSY, p.map_dma, b.addr, 2 * MiB, 2 * MiB)
    expect_errno(errno.EBUSY, p.map_dma, b.addr, 0, 4 * MiB)  # covers it
    assert window_kinds(p)[:2] == ["free", "msi"]
    b.close()


def test_map_anonymous_memory_window_above_page_efault(make_kernel) -> None:
    """[decision D7] a 2 MiB window over ordinary 4 KiB pages is not contiguous."""
    k = make_kernel("p4080")
    p = configured(k)
    b = Buffer(2 * MiB, align=2 * MiB)
    expect_errno(errno.EFAULT, p.map_dma, b.addr, 0, 2 * MiB)
    assert window_kinds(p) == ["free"] * 16
    assert not p.backend.enabled
    b.close()


def test_map_contiguous_memory_accepts_it(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = configured(k)
    b = Buffer(2 * MiB + 4 * KiB)
    assert p.map_dma(b.addr + 4 * KiB, 0, 2 * MiB) == 0  # any vaddr: the pool is aligned
    w = p.backend.window_table()[0]
    assert w.kind == "dma" and w.paddr % (2 * MiB) == 0
    assert p.translate(1, 0x1234, 4, True) == [(w.paddr + 0x1234, 4)]
    assert k.machine.bus.lookup(w.paddr + 0x1234)[1] == b.addr + 4 * KiB + 0x1234
    b.close()


def test_map_4k_windows_over_anonymous_memory(make_kernel) -> None:
    """4 KiB windows need no contiguity beyond the page."""
    k = make_kernel("p4080")
    p = configured(k, geometry=(0, 64 * KiB - 1), windows=16)
    b = Buffer(16 * KiB)
    assert p.map_dma(b.addr, 0, 16 * KiB) == 0
    for i in range(4):
        phys = p.translate(1, i * 4 * KiB + 8, 4, False)
        assert phys is not None
        assert k.machine.bus.lookup(phys[0][0]) == (k.process.mm, b.addr + i * 4 * KiB + 8)
    # The MSI banks sit in windows 15, 14, 13: one 4 KiB page each
    assert p.translate(1, 15 * 4 * KiB + 0x140, 4, True) == [(P4080_MSIIR[0], 4)]
    b.close()


def test_map_unaligned_vaddr_4k_efault(make_kernel) -> None:
    k = make_kernel("p4080")
    p = configured(k, geometry=(0, 64 * KiB - 1), windows=16)
    b = Buffer(16 * KiB)
    expect_errno(errno.EFAULT, p.map_dma, b.addr + 8, 0, 4 * KiB)
    b.close()


def test_map_unmapped_or_readonly_memory_efault(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = configured(k)
    expect_errno(errno.EFAULT, p.map_dma, 0x1000, 0, 2 * MiB)
    b = Buffer(2 * MiB)
    b.protect_readonly()
    expect_errno(errno.EFAULT, p.map_dma, b.addr, 0, 2 * MiB, RW)
    expect_errno(errno.EFAULT, p.map_dma, b.addr, 0, 2 * MiB, W)
    assert p.map_dma(b.addr, 0, 2 * MiB, R) == 0  # device reads only: no write needed
    b.close()


def test_map_hugetlb_2m_windows(make_kernel, hugetlb: bool) -> None:
    k = make_kernel("p4080")
    p = configured(k)
    b = Buffer(4 * MiB, hugetlb=True)
    assert p.map_dma(b.addr, 0, 4 * MiB) == 0
    for w in p.backend.window_table()[:2]:
        assert w.kind == "dma" and w.paddr % (2 * MiB) == 0
    b.close()


def test_map_hugetlb_4m_window_efault(make_kernel, hugetlb: bool) -> None:
    k = make_kernel("p4080")
    p = configured(k, windows=8)  # 4 MiB windows
    b = Buffer(4 * MiB, hugetlb=True)
    expect_errno(errno.EFAULT, p.map_dma, b.addr, 0, 4 * MiB)
    b.close()


def test_map_hugetlb_misaligned_window_einval(make_kernel, hugetlb: bool) -> None:
    """[proposed, Appendix A #14] contiguous but not aligned to the window size → EINVAL."""
    k = make_kernel("p4080")
    p = configured(k, windows=32)  # 1 MiB windows
    b = Buffer(2 * MiB, hugetlb=True)
    expect_errno(errno.EINVAL, p.map_dma, b.addr + 512 * KiB, 0, MiB)
    assert p.map_dma(b.addr + MiB, 0, MiB) == 0
    b.close()


def test_map_memlock_enomem(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    k.process.cap_ipc_lock = False
    k.process.memlock_override = 5 * MiB
    p = configured(k)
    b = Buffer(8 * MiB)
    pinned = k.machine.bus.pinned_bytes()
    expect_errno(errno.ENOMEM, p.map_dma, b.addr, 0, 6 * MiB)
    assert k.machine.bus.pinned_bytes() == pinned
    assert p.map_dma(b.addr, 0, 4 * MiB) == 0
    assert k.machine.locked_vm[k.process.pid] == 4 * MiB
    expect_errno(errno.ENOMEM, p.map_dma, b.addr, 4 * MiB, 2 * MiB)
    assert p.unmap_dma(0, 2 * MiB) == 2 * MiB
    assert k.machine.locked_vm[k.process.pid] == 2 * MiB
    assert p.map_dma(b.addr, 4 * MiB, 2 * MiB) == 0
    k.process.cap_ipc_lock = True  # CAP_IPC_LOCK: no limit
    assert p.map_dma(b.addr, 8 * MiB, 4 * MiB) == 0
    b.close()


def test_map_check_order(make_kernel) -> None:
    """D5's order: EBUSY before EFAULT before EINVAL (alignment) before ENOMEM."""
    k = make_kernel("p4080")
    k.process.cap_ipc_lock = False
    k.process.memlock_override = 0
    p = configured(k, geometry=(0, 64 * KiB - 1), windows=16)
    b = Buffer(16 * KiB)
    k.process.memlock_override = None
    k.process.cap_ipc_lock = True
    p.map_dma(b.addr, 0, 4 * KiB)
    k.process.cap_ipc_lock = False
    k.process.memlock_override = 0
    expect_errno(errno.EBUSY, p.map_dma, b.addr + 8, 0, 8 * KiB)     # overlap first
    expect_errno(errno.EFAULT, p.map_dma, b.addr + 8, 4 * KiB, 4 * KiB)  # then contiguity
    expect_errno(errno.ENOMEM, p.map_dma, b.addr, 4 * KiB, 4 * KiB)  # then memlock
    b.close()


def test_map_all_or_nothing(make_kernel) -> None:
    """A multi-window MAP_DMA whose last window fails leaves nothing enabled or pinned; in
    auto mode the banks are not mapped either."""
    k = make_kernel("p4080")
    p = configured(k, geometry=(0, 64 * KiB - 1), windows=16)
    b = Buffer(16 * KiB)
    pinned = k.machine.bus.pinned_bytes()
    # the last page is read-only: a WRITE mapping fails on window 3
    b.protect_readonly(12 * KiB, 4 * KiB)
    expect_errno(errno.EFAULT, p.map_dma, b.addr, 0, 16 * KiB, RW)
    assert window_kinds(p) == ["free"] * 16
    assert not p.backend.enabled and p.backend.dma_list == []
    assert k.machine.bus.pinned_bytes() == pinned
    assert p.translate(1, 0, 4, False) is None
    # memlock fails after pinning every window: all unpinned again
    k.process.cap_ipc_lock = False
    k.process.memlock_override = 8 * KiB
    expect_errno(errno.ENOMEM, p.map_dma, b.addr, 0, 12 * KiB, RW)
    assert k.machine.bus.pinned_bytes() == pinned
    assert window_kinds(p) == ["free"] * 16
    assert p.paace(1)["ap"] == 0 and p.paace(1)["v"] == 0
    b.close()


def test_map_rollback_keeps_other_windows(make_kernel) -> None:
    k = make_kernel("p4080")
    p = configured(k, geometry=(0, 64 * KiB - 1), windows=16)
    b = Buffer(32 * KiB)
    p.map_dma(b.addr, 0, 4 * KiB)
    b.protect_readonly(28 * KiB, 4 * KiB)
    expect_errno(errno.EFAULT, p.map_dma, b.addr + 16 * KiB, 4 * KiB, 16 * KiB, RW)
    assert window_kinds(p)[:5] == ["dma", "free", "free", "free", "free"]
    assert window_kinds(p)[13:] == ["msi", "msi", "msi"]
    assert p.translate(1, 0, 4, True) is not None
    b.close()


# ---------------------------------------------------------------------------------------------
# domain enable


@pytest.mark.parametrize("mode", MODES)
def test_every_map_enables_and_revalidates_av_disabled_liodn(make_kernel, mode: str) -> None:
    k = make_kernel("p4080", msi_mode=mode, contiguous_memory=True)
    p = configured(k)
    b = Buffer(4 * MiB)
    assert not p.backend.enabled
    p.map_dma(b.addr, 0, 2 * MiB)
    assert p.backend.enabled and p.paace(1)["v"] == 1
    assert p.translate(1, 8 * MiB, 4, False) is None  # unmapped iova: AV disables the LIODN
    assert p.paace(1)["v"] == 0
    assert p.translate(1, 0, 4, False) is None
    p.map_dma(b.addr + 2 * MiB, 2 * MiB, 2 * MiB)
    assert p.paace(1)["v"] == 1
    assert p.translate(1, 0, 4, False) is not None
    b.close()


def test_single_window_domain(make_kernel) -> None:
    """WINDOWS = 1 (explicit): one window, no SPAACE; the whole aperture maps one range."""
    k = make_kernel("p4080", msi_mode="explicit", contiguous_memory=True)
    p = configured(k, geometry=(0, 2 * MiB - 1), windows=1)
    b = Buffer(2 * MiB)
    assert p.map_dma(b.addr, 0, 2 * MiB) == 0
    f = p.paace(1)
    assert f["v"] == 1 and f["mw"] == 0 and f["wse"] == 20 and f["ap"] == 3
    phys = p.backend.window_table()[0].paddr
    assert f["twba"] == phys
    assert p.translate(1, 0x1F_FFFC, 4, True) == [(phys + 0x1F_FFFC, 4)]
    assert p.unmap_dma(0, 2 * MiB) == 2 * MiB
    assert p.paace(1)["v"] == 0 and not p.backend.enabled
    b.close()


# ---------------------------------------------------------------------------------------------
# UNMAP_DMA (§6.6)


@pytest.mark.parametrize("mode", MODES)
def test_unmap_checks(make_kernel, mode: str) -> None:
    k = make_kernel("p4080", msi_mode=mode, contiguous_memory=True)
    p = open_pamu(k)
    expect_errno(errno.EINVAL, p.unmap_dma, 0, 2 * MiB)  # windows not configured
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    expect_errno(errno.EINVAL, p.unmap_dma, 0, 2 * MiB, argsz=23)
    expect_errno(errno.EINVAL, p.unmap_dma, 0, 2 * MiB, flags=V.VFIO_DMA_UNMAP_FLAG_ALL)
    expect_errno(errno.EINVAL, p.unmap_dma, 0, 2 * MiB, flags=1)
    for iova, size in [(0, 0), (4 * KiB, 2 * MiB), (0, MiB), ((1 << 64) - 2 * MiB, 4 * MiB)]:
        expect_errno(errno.EINVAL, p.unmap_dma, iova, size)
    assert p.unmap_dma(0, 2 * MiB) == 0  # nothing mapped: success, size 0


def test_unmap_failure_writes_nothing_back(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = configured(k)
    u = V.vfio_iommu_type1_dma_unmap(argsz=24, flags=0, iova=0x1000, size=2 * MiB)
    expect_errno(errno.EINVAL, p.ioctl, V.VFIO_IOMMU_UNMAP_DMA, u)
    assert u.size == 2 * MiB


def test_unmap_writes_only_size(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = configured(k)
    b = Buffer(2 * MiB)
    p.map_dma(b.addr, 0, 2 * MiB)
    buf = bytearray(struct.pack("<IIQQ", 40, 0, 0, 4 * MiB) + b"\xAA" * 16)
    assert p.ioctl(V.VFIO_IOMMU_UNMAP_DMA, buf) == 0
    assert struct.unpack_from("<IIQQ", buf) == (40, 0, 0, 2 * MiB)
    assert buf[24:] == b"\xAA" * 16
    b.close()


@pytest.mark.parametrize("mode", MODES)
def test_unmap_trims_and_splits(make_kernel, mode: str) -> None:
    k = make_kernel("p4080", msi_mode=mode, contiguous_memory=True)
    p = configured(k)
    b = Buffer(16 * MiB)
    ws = 2 * MiB
    p.map_dma(b.addr, 0, 6 * ws)  # windows 0-5
    phys = {w.index: w.paddr for w in p.backend.window_table() if w.kind == "dma"}
    # split: remove window 2
    assert p.unmap_dma(2 * ws, ws) == ws
    assert [(m.iova, m.size, m.vaddr) for m in p.backend.iter_dma()] == [
        (0, 2 * ws, b.addr), (3 * ws, 3 * ws, b.addr + 3 * ws)]
    # trim the front of the second piece and the back of the first
    assert p.unmap_dma(ws, 3 * ws) == 2 * ws  # windows 1 and 3 (2 is already free)
    assert [(m.iova, m.size, m.vaddr) for m in p.backend.iter_dma()] == [
        (0, ws, b.addr), (4 * ws, 2 * ws, b.addr + 4 * ws)]
    assert window_kinds(p)[:6] == ["dma", "free", "free", "free", "dma", "dma"]
    # surviving windows keep their frames
    for w in (0, 4, 5):
        assert p.translate(1, w * ws + 0x10, 4, True) == [(phys[w] + 0x10, 4)]
    for w in (1, 2, 3):
        assert p.translate(1, w * ws + 0x10, 4, True) is None
        assert p.backend.enabled
        p.map_dma(b.addr, 6 * ws, ws)  # (re-enables the LIODN the fault disabled)
        p.unmap_dma(6 * ws, ws)
    assert k.machine.locked_vm[k.process.pid] == 3 * ws
    b.close()


def test_unmap_range_covering_everything(make_kernel) -> None:
    k = make_kernel("p4080", msi_mode="explicit", contiguous_memory=True)
    p = configured(k)
    b = Buffer(8 * MiB)
    p.map_dma(b.addr, 0, 2 * MiB)
    p.map_dma(b.addr, 4 * MiB, 4 * MiB)
    p.map_msi_bank(0, 30 * MiB)
    assert p.unmap_dma(0, 32 * MiB) == 6 * MiB  # never counts or touches the bank window
    assert window_kinds(p)[15] == "msi"
    assert p.unmap_dma(0, 1 << 63) == 0
    b.close()


def test_unmap_last_mapping_auto(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = configured(k)
    b = Buffer(4 * MiB)
    p.map_dma(b.addr, 0, 2 * MiB)
    p.map_dma(b.addr + 2 * MiB, 2 * MiB, 2 * MiB)
    assert p.unmap_dma(0, 2 * MiB) == 2 * MiB
    assert p.backend.enabled and window_kinds(p)[13:] == ["msi"] * 3
    k.machine.devices[0].hw.msi_set_enabled("msi", 1)  # what vfio-pci's SET_IRQS does
    assert p.unmap_dma(2 * MiB, 2 * MiB) == 2 * MiB
    assert not p.backend.enabled and p.paace(1)["v"] == 0
    assert window_kinds(p) == ["free"] * 16
    for i in range(3):
        assert p.spaace(1, 15 - i)["v"] == 0
    assert any("MSI" in w and "last DMA mapping" in w for w in k.warnings)
    expect_errno(errno.ENODEV, p.backend.msi_address, None, P4080_MSIIR[0])
    b.close()


def test_unmap_last_mapping_auto_no_warning_without_msi(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = configured(k)
    b = Buffer(2 * MiB)
    p.map_dma(b.addr, 0, 2 * MiB)
    p.unmap_dma(0, 2 * MiB)
    assert k.warnings == []
    b.close()


def test_unmap_last_mapping_explicit_keeps_banks(make_kernel) -> None:
    k = make_kernel("p4080", msi_mode="explicit", contiguous_memory=True)
    p = configured(k)
    b = Buffer(2 * MiB)
    p.map_msi_bank(0, 30 * MiB, W)
    p.map_dma(b.addr, 0, 2 * MiB)
    assert p.translate(1, 30 * MiB + 0x140, 4, True) == [(P4080_MSIIR[0], 4)]
    p.unmap_dma(0, 2 * MiB)
    assert not p.backend.enabled
    assert window_kinds(p)[15] == "msi" and p.spaace(1, 15)["v"] == 1
    assert p.translate(1, 30 * MiB + 0x140, 4, True) is None  # blocked by V = 0
    b.close()


@pytest.mark.parametrize("kernel,removed", [("6.18", 4 * MiB), ("5.19", 0)])
def test_unmap_other_owner(make_kernel, kernel: str, removed: int) -> None:
    """[proposed, Appendix A #31] as Type1: before 6.0 the walk stops at a window mapped by
    another process."""
    k = make_kernel("p4080", contiguous_memory=True, kernel=kernel)
    p = configured(k)
    b = Buffer(4 * MiB)
    me = k.process.pid
    k.process.pid = me + 100000
    p.map_dma(b.addr, 0, 4 * MiB)
    k.process.pid = me
    assert p.unmap_dma(0, 4 * MiB) == removed
    b.close()


# ---------------------------------------------------------------------------------------------
# GET_INFO (§6.8)


def test_get_info_explicit_enotty(make_kernel) -> None:
    p = open_pamu(make_kernel("p4080", msi_mode="explicit"))
    expect_errno(errno.ENOTTY, get_info, p)


def test_get_info_before_and_after_windows(p4080) -> None:
    p = open_pamu(p4080)
    info, buf = get_info(p)
    assert info.flags == V.VFIO_IOMMU_INFO_PGSIZES | V.VFIO_IOMMU_INFO_CAPS
    assert info.iova_pgsizes == 0 and info.cap_offset == 24 and info.argsz == 256
    assert iova_ranges(buf, info) == [(0, APERTURE_MAX)]
    p.set_geometry(0, 32 * MiB - 1)
    info, buf = get_info(p)
    assert info.iova_pgsizes == 0 and iova_ranges(buf, info) == [(0, 32 * MiB - 1)]
    p.set_windows(16)
    info, buf = get_info(p)
    assert info.iova_pgsizes == 0x20_0000
    assert iova_ranges(buf, info) == [(0, 0x019F_FFFF)]  # 13 windows (§6.9)
    # header at 24: id 1, version 1, next 0; nr_iovas 1
    assert struct.unpack_from("<HHIII", buf, 24) == (1, 1, 0, 1, 0)


def test_get_info_windows_le_banks(p4080) -> None:
    p = configured(p4080, windows=2)
    info, buf = get_info(p)
    assert info.iova_pgsizes == 16 * MiB
    assert iova_ranges(buf, info) == []  # [proposed, Appendix A #13]


def test_get_info_argsz(p4080) -> None:
    p = configured(p4080)
    expect_errno(errno.EINVAL, get_info, p, 15)
    full = 24 + 16 + 16
    for argsz in range(16, full + 8):
        buf = bytearray(b"\xAA" * (full + 8))
        struct.pack_into("<I", buf, 0, argsz)
        assert p.ioctl(V.VFIO_IOMMU_GET_INFO, buf) == 0
        assert buf[argsz:] == b"\xAA" * (len(buf) - argsz)  # nothing past argsz
        got_argsz, flags, pgsizes = struct.unpack_from("<IIQ", buf)
        assert flags == 3 and pgsizes == 2 * MiB
        if argsz < full:
            assert got_argsz == full
            if argsz >= 20:
                assert struct.unpack_from("<I", buf, 16)[0] == 0  # cap_offset
        else:
            assert got_argsz == argsz and struct.unpack_from("<I", buf, 16)[0] == 24
            assert struct.unpack_from("<QQ", buf, 40) == (0, 26 * MiB - 1)


def test_get_info_profile_6_1_write_back(make_kernel) -> None:
    """§2.7 #12: before 6.6 the fixed part written back is 16 or 20 bytes."""
    p = configured(make_kernel("p4080", kernel="6.1"))
    buf = bytearray(b"\xAA" * 24)
    struct.pack_into("<I", buf, 0, 24)
    p.ioctl(V.VFIO_IOMMU_GET_INFO, buf)
    assert buf[20:24] == b"\xAA" * 4
    buf = bytearray(b"\xAA" * 24)
    struct.pack_into("<I", buf, 0, 19)
    p.ioctl(V.VFIO_IOMMU_GET_INFO, buf)
    assert buf[16:24] == b"\xAA" * 8


# ---------------------------------------------------------------------------------------------
# The seed flow (§1.3, §6.9, §7.3 example)


@pytest.mark.parametrize("preset,msiir", [("p4080", P4080_MSIIR), ("t4240", T4240_MSIIR)])
def test_seed_flow(make_kernel, preset: str, msiir: list[int], request) -> None:  # noqa: ANN001
    if reserve_hugepages(4):
        k = make_kernel(preset)
        b = Buffer(4 * MiB, hugetlb=True)
    else:  # the labelled convenience of §10.3
        k = make_kernel(preset, contiguous_memory=True)
        b = Buffer(4 * MiB)
    request.addfinalizer(b.close)
    p = open_pamu(k)
    banks = len(msiir)
    assert p.bank_count() == banks
    assert p.set_geometry(0, 0x01FF_FFFF) == 0
    assert p.set_windows(16) == 0
    assert p.backend.window_size == 0x20_0000
    info, buf = get_info(p)
    assert info.iova_pgsizes == 0x20_0000
    assert iova_ranges(buf, info) == [(0, (16 - banks) * 0x20_0000 - 1)]
    assert p.map_dma(b.addr, 0, 0x40_0000, RW) == 0
    table = p.backend.window_table()
    assert [w.kind for w in table] == ["dma"] * 2 + ["free"] * (14 - banks) + ["msi"] * banks
    for i in range(banks):
        w = table[15 - i]
        assert w.bank == i and w.paddr == msiir[i] & ~0xFFF
        assert w.mapped_size == 0x1000 and w.prot == 2  # IOMMU_WRITE only
    assert p.backend.enabled
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 0x01A0_0000, 0x20_0000)
    expect_errno(errno.EBUSY, p.map_dma, b.addr, 0x0020_0000, 0x20_0000)
    # MSI addresses: bank 0 at window 15
    assert p.backend.msi_address(None, msiir[0]) == 0x01E0_0000 + (msiir[0] & 0xFFF)
    assert p.backend.msi_address(None, msiir[1]) == 0x01C0_0000 + (msiir[1] & 0xFFF)
    # translation of the MSI write and of DMA
    assert p.translate(1, 0x01E0_0000 + (msiir[0] & 0xFFF), 4, True) == [(msiir[0], 4)]
    assert p.translate(1, 0x01C0_0000 + (msiir[1] & 0xFFF), 4, True) == [(msiir[1], 4)]
    for w in range(2):
        assert p.translate(1, w * 0x20_0000 + 4, 4, False) == [(table[w].paddr + 4, 4)]
    # hand-computed PAACE (§7.3 example)
    f = p.paace(1)
    assert (f["wbah"], f["wbal"], f["wse"], f["mw"], f["wce"], f["atm"], f["v"]) == \
        (0, 0, 24, 1, 3, 1, 1)
    assert f["swse"] == 20 and f["ap"] == 3 and f["twba"] == table[0].paddr
    s = p.spaace(1, 15)
    assert (s["twbah"], s["twbal"], s["swse"], s["ap"], s["v"]) == (0xF, 0xFE044, 11, 2, 1)
    assert s["index"] == f["fspi"] + 14
    assert s["rpn"] == msiir[0] >> 12
    if banks == 4:
        s = p.spaace(1, 12)
        assert (s["twbah"], s["twbal"]) == (0xF, 0xFE047)
    # step 8: unmap
    assert p.unmap_dma(0, 0x40_0000) == 0x40_0000
    assert not p.backend.enabled
    assert p.translate(1, 0x01E0_0000 + (msiir[0] & 0xFFF), 4, True) is None
