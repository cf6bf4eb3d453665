"""Device DMA and MSI through PAMU windows, end to end (SPEC §7.4, §9.1, §10.3, §13.4–§13.6).

edu and dmacopy behind a PCIe controller of p4080/t4240 move real bytes of this process's memory
through the windows the PAMU backend programmed; faults move nothing, disable the LIODN (the
kernel's AV handler) until the next MAP_DMA, and MSIs reach the eventfd only through a bank
window.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest
from device_helpers import (
    EDU_DMA_BUF,
    EDU_DMA_DELAY_NS,
    EDU_IRQ_STATUS,
    Buffer,
    Dev,
    EventFds,
    bar_read,
    bar_write,
    count,
    enable_bus_master,
    expect_errno,
    open_device,
    set_trigger,
)
from pamu_helpers import Pamu

from vfiosim.hw import dmacopy as D
from vfiosim.uapi import vfio as V
from vfiosim.uapi import vfio_pamu as P

MSI, MSIX = V.VFIO_PCI_MSI_IRQ_INDEX, V.VFIO_PCI_MSIX_IRQ_INDEX
R, W = V.VFIO_DMA_MAP_FLAG_READ, V.VFIO_DMA_MAP_FLAG_WRITE
PAGE = 4096
MIB = 1 << 20
EDU = "0000:01:00.0"
DMACOPY = "0001:01:00.0"


@pytest.fixture
def res() -> Iterator[tuple[EventFds, list[Buffer]]]:
    efds, bufs = EventFds(), []
    yield efds, bufs
    efds.close()
    for b in bufs:
        b.close()


def _buf(bufs: list[Buffer], size: int, fill: bytes | None = None) -> Buffer:
    b = Buffer(size)
    if fill is not None:
        b[0:size] = (fill * size)[:size]
    bufs.append(b)
    return b


def _pamu(dev: Dev, aperture: int, windows: int) -> Pamu:
    p = Pamu(dev.k, dev.container, {dev.k.machine.device(dev.name).group: dev.group})
    assert p.set_geometry(0, aperture - 1) == 0
    assert p.set_windows(windows) == 0
    return p


def _edu_dma(dev: Dev, src: int, dst: int, n: int, to_ram: bool) -> None:
    bar_write(dev, 0x80, src, 8)
    bar_write(dev, 0x88, dst, 8)
    bar_write(dev, 0x90, n, 8)
    bar_write(dev, 0x98, 0x1 | (0x2 if to_ram else 0) | 0x4)
    dev.k.advance(EDU_DMA_DELAY_NS)


def _edu_with_4k_windows(make_kernel, preset: str, efds: EventFds, **opts) -> tuple[Dev, Pamu]:  # noqa: ANN001
    """edu in a 1 MiB aperture of 256 windows of 4 KiB: ordinary 4 KiB pages back them."""
    k = make_kernel(preset, **opts)
    dev = open_device(k, EDU, iommu=P.VFIO_FSL_PAMU_IOMMU)
    return dev, _pamu(dev, MIB, 256)


@pytest.mark.parametrize("preset", ["p4080", "t4240"])
def test_edu_round_trip_through_4k_windows(make_kernel, res, preset) -> None:
    efds, bufs = res
    dev, p = _edu_with_4k_windows(make_kernel, preset, efds)
    src, dst = _buf(bufs, PAGE), _buf(bufs, PAGE, b"\0")
    payload = os.urandom(PAGE)
    src[0:PAGE] = payload
    assert p.map_dma(src.addr, 0x0000, PAGE, R) == 0
    assert p.map_dma(dst.addr, 0x1000, PAGE, R | W) == 0
    efd = efds.new()
    set_trigger(dev, MSI, efd)
    enable_bus_master(dev)
    _edu_dma(dev, 0x0000, EDU_DMA_BUF, PAGE, to_ram=False)
    assert count(efd) == 1
    bar_write(dev, 0x64, 0x100)
    _edu_dma(dev, EDU_DMA_BUF, 0x1000, PAGE, to_ram=True)
    assert dst[0:PAGE] == payload
    assert count(efd) == 1
    assert dev.k.faults == []


def test_edu_write_to_read_only_window_faults_and_disables_the_liodn(make_kernel, res) -> None:
    efds, bufs = res
    dev, p = _edu_with_4k_windows(make_kernel, "p4080", efds)
    liodn = dev.k.machine.device(EDU).rid
    src, ro = _buf(bufs, PAGE, b"s"), _buf(bufs, PAGE, b"r")
    p.map_dma(src.addr, 0x0000, PAGE, R | W)
    p.map_dma(ro.addr, 0x1000, PAGE, R)
    efd = efds.new()
    set_trigger(dev, MSI, efd)
    enable_bus_master(dev)
    _edu_dma(dev, 0x0000, EDU_DMA_BUF, PAGE, to_ram=False)
    assert count(efd) == 1
    bar_write(dev, 0x64, 0x100)
    _edu_dma(dev, EDU_DMA_BUF, 0x1000, PAGE, to_ram=True)  # write to a READ-only window
    assert ro[0:PAGE] == b"r" * PAGE
    assert count(efd) == 0  # a faulting DMA raises no interrupt (SPEC §11.1)
    assert bar_read(dev, EDU_IRQ_STATUS) == 0
    v = dev.k.machine.pamu.violations[-1]
    assert (v.liodn, v.iova) == (liodn, 0x1000)
    # The AV handler disabled the LIODN: even a good DMA and the MSI fault now.
    assert p.paace(1)["v"] == 0
    _edu_dma(dev, 0x0000, EDU_DMA_BUF, 16, to_ram=False)
    assert count(efd) == 0
    assert dev.k.machine.pamu.violations[-1].iova == 0x0000
    # The next successful MAP_DMA enables the domain again (SPEC §6.5, §7.4).
    spare = _buf(bufs, PAGE)
    p.map_dma(spare.addr, 0x2000, PAGE, R | W)
    assert p.paace(1)["v"] == 1
    _edu_dma(dev, 0x0000, EDU_DMA_BUF, 16, to_ram=False)
    assert count(efd) == 1


def test_without_av_disables_liodn_the_device_keeps_working(make_kernel, res) -> None:
    efds, bufs = res
    dev, p = _edu_with_4k_windows(make_kernel, "p4080", efds, av_disables_liodn=False)
    src = _buf(bufs, PAGE, b"s")
    p.map_dma(src.addr, 0x0000, PAGE, R | W)
    efd = efds.new()
    set_trigger(dev, MSI, efd)
    enable_bus_master(dev)
    _edu_dma(dev, EDU_DMA_BUF, 0x5000, PAGE, to_ram=True)  # an unmapped window
    assert count(efd) == 0 and len(dev.k.faults) == 1
    assert p.paace(1)["v"] == 1
    _edu_dma(dev, 0x0000, EDU_DMA_BUF, 16, to_ram=False)
    assert count(efd) == 1
    assert bytes(dev.hw.dma_buf[:16]) == b"s" * 16


def test_edu_dma_before_any_map_dma_faults(make_kernel, res) -> None:
    # Attached before WINDOWS and never enabled: the LIODN is invalid (SPEC §6.2, App. B).
    efds, bufs = res
    dev, p = _edu_with_4k_windows(make_kernel, "p4080", efds)
    enable_bus_master(dev)
    _edu_dma(dev, 0x0000, EDU_DMA_BUF, 16, to_ram=False)
    assert dev.k.faults and dev.k.faults[-1].iova == 0
    assert dev.k.machine.pamu.violations[-1].reason


@pytest.mark.parametrize("preset", ["p4080", "t4240"])
def test_dmacopy_1mib_through_pamu_windows_signals_its_msix_vector(make_kernel, res,
                                                                   preset) -> None:
    efds, bufs = res
    k = make_kernel(preset, contiguous_memory=True)
    k.process.cap_ipc_lock = True
    dev = open_device(k, DMACOPY, iommu=P.VFIO_FSL_PAMU_IOMMU)
    p = _pamu(dev, 16 * MIB, 16)  # 1 MiB windows
    ring, a, b = _buf(bufs, MIB, b"\0"), _buf(bufs, MIB), _buf(bufs, MIB, b"\0")
    a[0:MIB] = os.urandom(MIB)
    assert p.map_dma(ring.addr, 0 * MIB, MIB, R | W) == 0
    assert p.map_dma(a.addr, 1 * MIB, MIB, R) == 0
    assert p.map_dma(b.addr, 2 * MIB, MIB, R | W) == 0
    fds = [efds.new() for _ in range(8)]
    assert set_trigger(dev, MSIX, *fds) == 0  # the banks are mapped since the first MAP_DMA
    enable_bus_master(dev)
    ring[0:32] = D.pack_descriptor(1 * MIB, 2 * MIB, MIB, D.DMAC_DESC_F_INT, 5)
    bar_write(dev, D.DMAC_REG_RING_LO, 0)
    bar_write(dev, D.DMAC_REG_RING_HI, 0)
    bar_write(dev, D.DMAC_REG_RING_SIZE, 4)
    bar_write(dev, D.DMAC_REG_CTRL, D.DMAC_CTRL_ENABLE)
    bar_write(dev, D.DMAC_REG_TAIL, 1)
    k.run_until_idle()
    assert b[0:MIB] == a[0:MIB]
    assert [count(fd) for fd in fds] == [0, 0, 0, 0, 0, 1, 0, 0]
    assert k.faults == []
    # The MSI-X message went to a bank window at the top of the aperture.
    lo, hi, _ = dev.hw.msix_cap.entries[5][:3]
    banks = k.ioctl(dev.container, P.VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT)
    assert (16 - banks) * MIB <= (hi << 32 | lo) < 16 * MIB


def test_explicit_mode_msi_needs_the_bank_the_allocator_picks(make_kernel, res) -> None:
    # SPEC §13.5: only some banks mapped, and the allocator picks an unmapped one -> ENODEV.
    efds, bufs = res
    k = make_kernel("p4080", msi_mode="explicit")
    dev = open_device(k, EDU, iommu=P.VFIO_FSL_PAMU_IOMMU)
    p = _pamu(dev, MIB, 256)
    src = _buf(bufs, PAGE, b"x")
    p.map_dma(src.addr, 0, PAGE, R | W)
    assert p.map_msi_bank(1, 0xFF000, W) == 0  # bank 1 only; bank 0 has free hwirqs
    efd = efds.new()
    free = [bank.free_count() for bank in k.machine.msi.banks]
    expect_errno(errno.ENODEV, set_trigger, dev, MSI, efd)
    assert [bank.free_count() for bank in k.machine.msi.banks] == free  # nothing kept
    assert p.map_msi_bank(0, 0xFE000, W) == 0
    assert set_trigger(dev, MSI, efd) == 0
    enable_bus_master(dev)
    bar_write(dev, 0x60, 1)
    assert count(efd) == 1
    assert dev.hw.msi_cap.message(0)[0] == 0xFE000 + 0x140
