"""VFIO_DEVICE_GET_IRQ_INFO (SPEC §11.4, §2.7 #16)."""

from __future__ import annotations

import errno

import pytest
from device_helpers import DMACOPY, EDU, expect_errno, irq_info, open_device

from vfiosim.uapi import vfio as V

EVENTFD = V.VFIO_IRQ_INFO_EVENTFD
MASKABLE = V.VFIO_IRQ_INFO_MASKABLE
AUTOMASKED = V.VFIO_IRQ_INFO_AUTOMASKED
NORESIZE = V.VFIO_IRQ_INFO_NORESIZE


def test_edu_table(x86) -> None:
    dev = open_device(x86, EDU)
    got = {i: (irq_info(dev, i).count, irq_info(dev, i).flags) for i in (0, 1, 2, 4)}
    assert got == {
        V.VFIO_PCI_INTX_IRQ_INDEX: (1, EVENTFD | MASKABLE | AUTOMASKED),
        V.VFIO_PCI_MSI_IRQ_INDEX: (1, EVENTFD | NORESIZE),
        V.VFIO_PCI_MSIX_IRQ_INDEX: (0, EVENTFD | NORESIZE),
        V.VFIO_PCI_REQ_IRQ_INDEX: (1, EVENTFD | NORESIZE),
    }
    assert got[0][1] == 0x7 and got[1][1] == 0x9
    # ERR exists only on PCI Express: edu is conventional PCI
    expect_errno(errno.EINVAL, irq_info, dev, V.VFIO_PCI_ERR_IRQ_INDEX)


@pytest.mark.parametrize("index", [5, 6, 0xFFFF_FFFF])
def test_index_out_of_range(x86, index: int) -> None:
    dev = open_device(x86)
    expect_errno(errno.EINVAL, irq_info, dev, index)


def test_argsz(x86) -> None:
    dev = open_device(x86)
    info = V.vfio_irq_info(argsz=15, index=0)
    expect_errno(errno.EINVAL, x86.ioctl, dev.fd, V.VFIO_DEVICE_GET_IRQ_INFO, info)
    info = V.vfio_irq_info(argsz=16, index=0)
    assert x86.ioctl(dev.fd, V.VFIO_DEVICE_GET_IRQ_INFO, info) == 0
    assert info.count == 1


def test_dmacopy_pcie_msix_6_18(x86) -> None:
    """PCI Express: ERR has one vector; x86 can grow MSI-X while enabled, so 6.5 and later
    clear NORESIZE for MSI-X (§2.7 #16)."""
    dev = open_device(x86, DMACOPY)
    err = irq_info(dev, V.VFIO_PCI_ERR_IRQ_INDEX)
    assert (err.count, err.flags) == (1, EVENTFD | NORESIZE)
    msix = irq_info(dev, V.VFIO_PCI_MSIX_IRQ_INDEX)
    assert msix.count == dev.hw.msix_vectors > 1
    assert msix.flags == EVENTFD
    msi = irq_info(dev, V.VFIO_PCI_MSI_IRQ_INDEX)
    assert msi.count == dev.hw.msi_vectors
    assert msi.flags == EVENTFD | NORESIZE


def test_dmacopy_msix_noresize_before_6_5(make_kernel) -> None:
    k = make_kernel("x86", kernel="6.4")
    dev = open_device(k, DMACOPY)
    assert irq_info(dev, V.VFIO_PCI_MSIX_IRQ_INDEX).flags == EVENTFD | NORESIZE


def test_dmacopy_intx_per_pin(x86) -> None:
    dev = open_device(x86, DMACOPY)
    pin = dev.hw.cfg_read(0x3D, 1)
    intx = irq_info(dev, V.VFIO_PCI_INTX_IRQ_INDEX)
    assert intx.count == (1 if pin else 0)
    assert intx.flags == EVENTFD | MASKABLE | AUTOMASKED


def test_dmacopy_msix_noresize_on_pamu(make_kernel) -> None:
    """The Freescale MSI controller cannot add MSI-X vectors to an enabled function, so
    NORESIZE stays set on 6.18 too."""
    from vfiosim.uapi.vfio_pamu import VFIO_FSL_PAMU_IOMMU

    k = make_kernel("p4080")
    dev = open_device(k, "0001:01:00.0", iommu=VFIO_FSL_PAMU_IOMMU)
    msix = irq_info(dev, V.VFIO_PCI_MSIX_IRQ_INDEX)
    assert (msix.count, msix.flags) == (8, EVENTFD | NORESIZE)
    assert irq_info(dev, V.VFIO_PCI_ERR_IRQ_INDEX).count == 1
