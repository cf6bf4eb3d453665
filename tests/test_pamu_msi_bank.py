"""PAMU MSI banks: auto mapping (option A) and the SDK's explicit MAP/UNMAP_MSI_BANK.

SPEC §6.7, §9.1 (``msi_address``), §13.4.
"""

from __future__ import annotations

import errno

import pytest
from pamu_helpers import (
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
    open_pamu,
)

from vfiosim.uapi import vfio as V
from vfiosim.uapi import vfio_pamu as P

WS = 2 * MiB  # window size of the 32 MiB / 16 windows layout


def configured(k, windows: int = 16) -> Pamu:  # noqa: ANN001
    p = open_pamu(k)
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(windows)
    return p


def kinds(p: Pamu) -> list[str]:
    return [w.kind for w in p.backend.window_table()]


# ---------------------------------------------------------------------------------------------
# auto mode (§6.7.1)


def test_auto_msi_bank_ioctls_enotty(p4080) -> None:
    p = configured(p4080)
    expect_errno(errno.ENOTTY, p.map_msi_bank, 0, 0)
    expect_errno(errno.ENOTTY, p.unmap_msi_bank, 0)
    # even with a short argsz: the ioctl does not exist in this mode
    expect_errno(errno.ENOTTY, p.map_msi_bank, 0, 0, argsz=0)


@pytest.mark.parametrize("preset,msiir,windows", [
    ("p4080", P4080_MSIIR, 16), ("t4240", T4240_MSIIR, 16), ("p4080", P4080_MSIIR, 8),
    ("t4240", T4240_MSIIR, 256),
])
def test_auto_first_map_maps_every_bank(make_kernel, preset: str, msiir: list[int],
                                        windows: int) -> None:
    k = make_kernel(preset, contiguous_memory=True)
    p = configured(k, windows)
    ws = 32 * MiB // windows
    b = Buffer(ws)
    for bank, addr in enumerate(msiir):
        expect_errno(errno.ENODEV, p.backend.msi_address, None, addr)  # before MAP_DMA
        assert p.translate(1, (windows - 1 - bank) * ws + (addr & 0xFFF), 4, True) is None
    assert p.map_dma(b.addr, 0, ws) == 0
    for bank, addr in enumerate(msiir):
        w = windows - 1 - bank
        iova = w * ws + (addr & 0xFFF)
        assert p.backend.msi_address(None, addr) == iova
        assert p.translate(1, iova, 4, True) == [(addr, 4)]
    # write only; one 4 KiB page: the rest of the window faults
    k.machine.pamu.av_disables_liodn = False
    top = (windows - 1) * ws
    assert p.translate(1, top + (msiir[0] & 0xFFF), 4, False) is None
    if ws > 4 * KiB:
        assert p.translate(1, top + 0x1000, 4, True) is None
    s = p.machine.pamu.dump(p.liodn(1))["spaaces"]
    bank0 = next(x for x in s if x["window"] == windows - 1)
    assert bank0["swse"] == 11 and bank0["ap"] == 2 and bank0["v"] == 1
    assert bank0["twba"] == msiir[0] & ~0xFFF
    b.close()


def test_auto_banks_stay_while_mappings_remain(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = configured(k)
    b = Buffer(4 * MiB)
    p.map_dma(b.addr, 0, WS)
    p.map_dma(b.addr + WS, 4 * WS, WS)
    before = [(w.index, w.paddr) for w in p.backend.window_table() if w.kind == "msi"]
    p.unmap_dma(0, WS)
    assert [(w.index, w.paddr) for w in p.backend.window_table() if w.kind == "msi"] == before
    p.unmap_dma(4 * WS, WS)
    assert kinds(p) == ["free"] * 16
    # and a new first mapping maps them again
    p.map_dma(b.addr, 2 * WS, WS)
    assert kinds(p)[13:] == ["msi"] * 3
    b.close()


def test_auto_unmap_never_counts_bank_windows(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = configured(k)
    b = Buffer(4 * MiB)
    p.map_dma(b.addr, 0, WS)
    assert p.unmap_dma(13 * WS, 3 * WS) == 0
    assert kinds(p)[13:] == ["msi"] * 3
    assert p.unmap_dma(0, 32 * MiB) == WS
    b.close()


# ---------------------------------------------------------------------------------------------
# explicit mode (§6.7.2)


@pytest.fixture
def xp(make_kernel) -> Pamu:  # noqa: ANN001
    return configured(make_kernel("p4080", msi_mode="explicit", contiguous_memory=True))


def test_explicit_map_bank(xp: Pamu) -> None:
    assert xp.map_msi_bank(2, 5 * WS, W) == 0
    table = xp.backend.window_table()
    assert table[5].kind == "msi" and table[5].bank == 2
    assert table[5].paddr == 0xF_FE04_6000 and table[5].mapped_size == 0x1000
    assert [(m.iova, m.bank) for m in xp.backend.msi_dma_list] == [(5 * WS, 2)]
    s = xp.spaace(1, 5)
    assert (s["twbah"], s["twbal"], s["swse"], s["ap"], s["v"]) == (0xF, 0xFE046, 11, 2, 1)
    # the domain is not enabled by an MSI bank
    assert not xp.backend.enabled and xp.paace(1)["v"] == 0
    assert xp.translate(1, 5 * WS + 0x140, 4, True) is None
    assert xp.backend.msi_address(None, P4080_MSIIR[2]) == 5 * WS + 0x140
    # a DMA mapping enables the domain: the MSI write goes through
    b = Buffer(WS)
    xp.map_dma(b.addr, 0, WS)
    assert xp.translate(1, 5 * WS + 0x140, 4, True) == [(P4080_MSIIR[2], 4)]
    b.close()


def test_explicit_bank_in_window_0(xp: Pamu) -> None:
    """Window 0 lives in the primary entry."""
    xp.map_msi_bank(0, 0, RW)
    f = xp.paace(1)
    assert f["twba"] == 0xF_FE04_4000 and f["swse"] == 11 and f["ap"] == 3
    xp.unmap_msi_bank(0)
    assert xp.paace(1)["ap"] == 0


def test_explicit_map_bank_errors(xp: Pamu) -> None:
    expect_errno(errno.EINVAL, xp.map_msi_bank, 0, 0, argsz=23)
    expect_errno(errno.EINVAL, xp.map_msi_bank, 0, 0, flags=0)
    expect_errno(errno.EINVAL, xp.map_msi_bank, 0, 0, flags=RW | 4)
    expect_errno(errno.EINVAL, xp.map_msi_bank, 0, 0, flags=1 << 31)
    expect_errno(errno.EINVAL, xp.map_msi_bank, 0, 0x1000)         # not a window start
    expect_errno(errno.EINVAL, xp.map_msi_bank, 0, WS + 0x140)
    expect_errno(errno.EINVAL, xp.map_msi_bank, 0, 32 * MiB)       # past the aperture
    expect_errno(errno.EINVAL, xp.map_msi_bank, 0, 1 << 63)
    expect_errno(errno.ENODEV, xp.map_msi_bank, 3, 0)              # p4080 has 3 banks
    expect_errno(errno.ENODEV, xp.map_msi_bank, 0xFFFF_FFFF, 0)
    assert kinds(xp) == ["free"] * 16
    xp.map_msi_bank(0, 0)
    expect_errno(errno.EBUSY, xp.map_msi_bank, 0, 0)               # same bank again
    expect_errno(errno.EBUSY, xp.map_msi_bank, 1, 0)               # another bank
    b = Buffer(WS)
    xp.map_dma(b.addr, WS, WS)
    expect_errno(errno.EBUSY, xp.map_msi_bank, 1, WS)              # a DMA window
    b.close()


def test_explicit_map_bank_check_order(xp: Pamu) -> None:
    """flags, then the bank, then the window (iova), then the window in use: the SDK's
    vfio_do_msi_map() checks READ/WRITE, vfio_msi_map() asks fsl_msi_get_region() for the
    bank (-ENODEV) before iova_to_win() and iommu_domain_window_enable() look at the iova."""
    xp.map_msi_bank(0, 0)
    expect_errno(errno.EINVAL, xp.map_msi_bank, 9, 0, flags=0)
    expect_errno(errno.ENODEV, xp.map_msi_bank, 9, 0x1000)       # not a window start
    expect_errno(errno.ENODEV, xp.map_msi_bank, 9, 32 * MiB)     # past the aperture
    expect_errno(errno.ENODEV, xp.map_msi_bank, 9, 0)            # window in use
    expect_errno(errno.EINVAL, xp.map_msi_bank, 1, 0x1000)
    expect_errno(errno.EBUSY, xp.map_msi_bank, 1, 0)


def test_explicit_map_bank_before_windows(make_kernel) -> None:
    p = open_pamu(make_kernel("p4080", msi_mode="explicit"))
    expect_errno(errno.EINVAL, p.map_msi_bank, 0, 0)
    expect_errno(errno.ENODEV, p.map_msi_bank, 3, 0)  # the bank is looked up first
    p.set_geometry(0, 32 * MiB - 1)
    expect_errno(errno.EINVAL, p.map_msi_bank, 0, 0)
    expect_errno(errno.ENODEV, p.map_msi_bank, 3, 0)


def test_explicit_same_bank_twice_lowest_window_wins(xp: Pamu) -> None:
    xp.map_msi_bank(1, 9 * WS)
    xp.map_msi_bank(1, 3 * WS)
    assert xp.backend.msi_address(None, P4080_MSIIR[1]) == 3 * WS + 0x140
    xp.unmap_msi_bank(3 * WS)
    assert xp.backend.msi_address(None, P4080_MSIIR[1]) == 9 * WS + 0x140
    expect_errno(errno.ENODEV, xp.backend.msi_address, None, P4080_MSIIR[0])


def test_explicit_unmap_bank(xp: Pamu) -> None:
    xp.map_msi_bank(0, 7 * WS)
    expect_errno(errno.EINVAL, xp.unmap_msi_bank, 7 * WS, argsz=15)
    expect_errno(errno.EINVAL, xp.unmap_msi_bank, 7 * WS, flags=1)
    expect_errno(errno.EINVAL, xp.unmap_msi_bank, 6 * WS)
    expect_errno(errno.EINVAL, xp.unmap_msi_bank, 7 * WS + 0x1000)
    b = Buffer(WS)
    xp.map_dma(b.addr, 0, WS)
    expect_errno(errno.EINVAL, xp.unmap_msi_bank, 0)  # a DMA window is not an MSI mapping
    assert xp.unmap_msi_bank(7 * WS) == 0
    assert kinds(xp)[7] == "free" and xp.spaace(1, 7)["v"] == 0
    assert xp.backend.msi_dma_list == []
    expect_errno(errno.EINVAL, xp.unmap_msi_bank, 7 * WS)
    assert xp.translate(1, 7 * WS + 0x140, 4, True) is None
    b.close()


def test_explicit_get_info_enotty(xp: Pamu) -> None:
    buf = bytearray(64)
    buf[0] = 64
    expect_errno(errno.ENOTTY, xp.ioctl, V.VFIO_IOMMU_GET_INFO, buf)


def test_explicit_read_only_bank_faults_msi(xp: Pamu) -> None:
    xp.machine.pamu.av_disables_liodn = False
    b = Buffer(WS)
    xp.map_dma(b.addr, 0, WS)
    xp.map_msi_bank(0, WS, R)
    assert xp.translate(1, WS + 0x140, 4, True) is None
    assert xp.translate(1, WS + 0x140, 4, False) == [(P4080_MSIIR[0], 4)]
    b.close()


def test_explicit_release_unmaps_banks(make_kernel) -> None:
    k = make_kernel("p4080", msi_mode="explicit")
    p = configured(k)
    p.map_msi_bank(0, 0)
    k.close(p.gfds[1])
    assert p.machine.pamu.paace_fields(p.liodn(1))["mw"] == 0


# ---------------------------------------------------------------------------------------------
# sdk_swallow_errors (§6.7.2)


@pytest.fixture
def sp(make_kernel) -> Pamu:  # noqa: ANN001
    k = make_kernel("p4080", msi_mode="explicit", sdk_swallow_errors=True)
    return configured(k)


def test_swallow_map_bank(sp: Pamu) -> None:
    assert sp.map_msi_bank(0, 0, flags=0) == 0       # no READ/WRITE
    assert sp.map_msi_bank(3, 0) == 0                # unknown bank
    assert sp.map_msi_bank(0, 0x1000) == 0           # not a window start
    assert kinds(sp) == ["free"] * 16
    assert sp.map_msi_bank(0, 0) == 0
    assert sp.map_msi_bank(1, 0) == 0                # window in use
    assert [(m.iova, m.bank) for m in sp.backend.msi_dma_list] == [(0, 0)]
    expect_errno(errno.EINVAL, sp.map_msi_bank, 0, WS, argsz=23)  # argsz still fails


def test_swallow_unmap_bank(sp: Pamu) -> None:
    assert sp.unmap_msi_bank(5 * WS) == 0            # no such mapping
    assert sp.unmap_msi_bank(0, flags=1) == 0
    expect_errno(errno.EINVAL, sp.unmap_msi_bank, 0, argsz=15)
    sp.map_msi_bank(2, 5 * WS)
    assert sp.unmap_msi_bank(5 * WS) == 0
    assert kinds(sp)[5] == "free"


def test_without_swallow_same_calls_fail(xp: Pamu) -> None:
    expect_errno(errno.EINVAL, xp.map_msi_bank, 0, 0, flags=0)
    expect_errno(errno.ENODEV, xp.map_msi_bank, 3, 0)
    expect_errno(errno.EINVAL, xp.unmap_msi_bank, 5 * WS)


def test_bank_count_ioctl_value(make_kernel) -> None:
    p = open_pamu(make_kernel("t4240", msi_mode="explicit"))
    assert p.ioctl(P.VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT) == 4


# ---------------------------------------------------------------------------------------------
# end to end with vfio-pci and edu (SPEC §6.9 step 7, §9.1)


@pytest.mark.parametrize("preset,msiir", [("p4080", P4080_MSIIR), ("t4240", T4240_MSIIR)])
def test_auto_msi_end_to_end(make_kernel, preset: str, msiir: list[int]) -> None:
    from device_helpers import (
        EDU,
        EDU_IRQ_ACK,
        EDU_IRQ_RAISE,
        EventFds,
        bar_write,
        count,
        enable_bus_master,
        open_device,
        set_trigger,
    )

    k = make_kernel(preset, contiguous_memory=True)
    dev = open_device(k, EDU, iommu=P.VFIO_FSL_PAMU_IOMMU)
    p = Pamu(k, dev.container, {k.machine.device(EDU).group: dev.group})
    p.set_geometry(0, 0x01FF_FFFF)
    p.set_windows(16)
    efds = EventFds()
    try:
        efd = efds.new()
        free = [k.machine.msi.banks[i].free_count() for i in range(len(msiir))]
        # before the first MAP_DMA no bank window exists: ENODEV, nothing stays allocated
        expect_errno(errno.ENODEV, set_trigger, dev, V.VFIO_PCI_MSI_IRQ_INDEX, efd)
        assert [k.machine.msi.banks[i].free_count() for i in range(len(msiir))] == free
        b = Buffer(4 * MiB)
        p.map_dma(b.addr, 0, 4 * MiB)
        assert set_trigger(dev, V.VFIO_PCI_MSI_IRQ_INDEX, efd) == 0
        assert dev.hw.msi_kind == "msi"
        enable_bus_master(dev)
        bar_write(dev, EDU_IRQ_RAISE, 1)
        assert count(efd) == 1
        bar_write(dev, EDU_IRQ_ACK, 1)
        # the message went to bank 0's window: iova 0x01E0_0000 + the MSIIR offset
        faults = len(k.machine.faults)
        assert p.unmap_dma(0, 4 * MiB) == 4 * MiB
        assert any("last DMA mapping removed while MSI is enabled" in w for w in k.warnings)
        bar_write(dev, EDU_IRQ_RAISE, 1)
        assert count(efd) == 0
        assert len(k.machine.faults) > faults
        assert k.machine.pamu.violations[-1].iova == 0x01E0_0000 + (msiir[0] & 0xFFF)
        b.close()
    finally:
        efds.close()
