"""Interrupts end to end on x86 (SPEC §9.2, §11.5 INTx delivery, §13.5): edu's MSI reaches
the eventfd through the untranslated doorbell; loopback; INTx automask, unmask (ioctl and
unmask eventfd) and the virtual INTx disable bit."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator

import pytest
from device_helpers import (
    EDU_IRQ_ACK,
    EDU_IRQ_RAISE,
    EDU_IRQ_STATUS,
    TRIGGER_BOOL,
    TRIGGER_NONE,
    EventFds,
    bar_read,
    bar_write,
    cfg_read,
    cfg_write,
    count,
    disable_irqs,
    enable_bus_master,
    fds_data,
    open_device,
    set_irqs,
    set_trigger,
)

from vfiosim.uapi import pci_regs as R
from vfiosim.uapi import vfio as V

INTX, MSI = V.VFIO_PCI_INTX_IRQ_INDEX, V.VFIO_PCI_MSI_IRQ_INDEX
UNMASK_NONE = V.VFIO_IRQ_SET_ACTION_UNMASK | V.VFIO_IRQ_SET_DATA_NONE
UNMASK_EVENTFD = V.VFIO_IRQ_SET_ACTION_UNMASK | V.VFIO_IRQ_SET_DATA_EVENTFD
MASK_NONE = V.VFIO_IRQ_SET_ACTION_MASK | V.VFIO_IRQ_SET_DATA_NONE


@pytest.fixture
def efds() -> Iterator[EventFds]:
    e = EventFds()
    yield e
    e.close()


@pytest.fixture
def edu(x86):  # noqa: ANN001, ANN201
    return open_device(x86)


# ---------------------------------------------------------------------------------------------
# MSI


def test_msi_delivered_through_untranslated_doorbell(edu, efds) -> None:
    """No DMA mapping exists at all: the write to 0xFEE0_0000 is an interrupt request."""
    fd = efds.new()
    set_trigger(edu, MSI, fd)
    enable_bus_master(edu)
    assert edu.hw.msi_cap.address == 0xFEE0_0000
    vec = edu.k.machine.msi.vectors()[0]
    assert edu.hw.msi_cap.data == vec.data
    bar_write(edu, EDU_IRQ_RAISE, 1)
    assert count(fd) == 1
    assert bar_read(edu, EDU_IRQ_STATUS) == 1
    bar_write(edu, EDU_IRQ_ACK, 1)
    assert bar_read(edu, EDU_IRQ_STATUS) == 0
    assert count(fd) == 0
    assert edu.k.machine.faults == []


def test_every_raise_sends_a_new_msi(edu, efds) -> None:
    fd = efds.new()
    set_trigger(edu, MSI, fd)
    enable_bus_master(edu)
    bar_write(edu, EDU_IRQ_RAISE, 1)
    bar_write(edu, EDU_IRQ_RAISE, 1)
    bar_write(edu, EDU_IRQ_RAISE, 2)
    assert count(fd) == 3


def test_msi_without_bus_master_dropped(edu, efds) -> None:
    fd = efds.new()
    set_trigger(edu, MSI, fd)
    bar_write(edu, EDU_IRQ_RAISE, 1)
    assert count(fd) == 0
    assert any("bus mastering disabled" in e for e in edu.k.machine.events)


def test_client_never_sees_the_programmed_message(edu, efds) -> None:
    set_trigger(edu, MSI, efds.new())
    assert cfg_read(edu, 0x40 + R.PCI_MSI_ADDRESS_LO, 4) == 0
    assert cfg_read(edu, 0x40 + R.PCI_MSI_DATA_64, 2) == 0
    assert edu.hw.msi_cap.address == 0xFEE0_0000


def test_msi_loopback_without_device(edu, efds) -> None:
    fd = efds.new()
    set_trigger(edu, MSI, fd)
    set_irqs(edu, TRIGGER_NONE, MSI, 0, 1)
    set_irqs(edu, TRIGGER_BOOL, MSI, 0, 1, b"\x00")
    set_irqs(edu, TRIGGER_BOOL, MSI, 0, 1, b"\x01")
    assert count(fd) == 2


def test_msi_disabled_device_falls_back_to_intx(edu, efds) -> None:
    fd = efds.new()
    set_trigger(edu, MSI, fd)
    enable_bus_master(edu)
    disable_irqs(edu, MSI)
    assert edu.hw.msi_kind is None
    bar_write(edu, EDU_IRQ_RAISE, 1)
    assert count(fd) == 0
    assert cfg_read(edu, R.PCI_STATUS, 2) & R.PCI_STATUS_INTERRUPT


def test_msi_after_trigger_removed_is_spurious(edu, efds) -> None:
    """fd -1 frees the vector's hwirq; the device still holds the old message, whose
    arrival is logged and signals nothing."""
    fd = efds.new()
    set_trigger(edu, MSI, fd)
    enable_bus_master(edu)
    set_trigger(edu, MSI, -1)
    bar_write(edu, EDU_IRQ_RAISE, 1)
    assert count(fd) == 0


# ---------------------------------------------------------------------------------------------
# INTx


def test_intx_automask_and_unmask(edu, efds) -> None:
    fd = efds.new()
    set_trigger(edu, INTX, fd)
    bar_write(edu, EDU_IRQ_RAISE, 1)
    assert count(fd) == 1  # delivered, and now masked
    bar_write(edu, EDU_IRQ_RAISE, 2)  # still asserted / masked: nothing
    assert count(fd) == 0
    # UNMASK while the device still asserts: signalled again, stays masked
    set_irqs(edu, UNMASK_NONE, INTX, 0, 1)
    assert count(fd) == 1
    assert edu.vdev.ctx[0].masked
    bar_write(edu, EDU_IRQ_ACK, 3)  # deasserted
    set_irqs(edu, UNMASK_NONE, INTX, 0, 1)
    assert count(fd) == 0
    assert not edu.vdev.ctx[0].masked
    bar_write(edu, EDU_IRQ_RAISE, 1)
    assert count(fd) == 1


def test_intx_mask_ioctl_blocks_delivery(edu, efds) -> None:
    fd = efds.new()
    set_trigger(edu, INTX, fd)
    set_irqs(edu, MASK_NONE, INTX, 0, 1)
    bar_write(edu, EDU_IRQ_RAISE, 1)
    assert count(fd) == 0
    set_irqs(edu, UNMASK_NONE, INTX, 0, 1)  # pending: delivered at unmask
    assert count(fd) == 1


def test_intx_enabled_while_asserted_fires_at_once(edu, efds) -> None:
    bar_write(edu, EDU_IRQ_RAISE, 1)
    fd = efds.new()
    set_trigger(edu, INTX, fd)
    assert count(fd) == 1
    assert edu.vdev.ctx[0].masked


def test_intx_disable_bit_suppresses_real_and_loopback(edu, efds) -> None:
    fd = efds.new()
    set_trigger(edu, INTX, fd)
    cfg_write(edu, R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_INTX_DISABLE)
    bar_write(edu, EDU_IRQ_RAISE, 1)
    set_irqs(edu, TRIGGER_NONE, INTX, 0, 1)
    set_irqs(edu, TRIGGER_BOOL, INTX, 0, 1, b"\x01")
    set_irqs(edu, UNMASK_NONE, INTX, 0, 1)
    assert count(fd) == 0
    # the device still reports its interrupt in Status
    assert cfg_read(edu, R.PCI_STATUS, 2) & R.PCI_STATUS_INTERRUPT
    # clearing INTx disable unmasks: still asserted, so it is delivered now
    cfg_write(edu, R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY)
    assert count(fd) == 1


def test_intx_loopback_does_not_mask(edu, efds) -> None:
    fd = efds.new()
    set_trigger(edu, INTX, fd)
    set_irqs(edu, TRIGGER_NONE, INTX, 0, 1)
    assert count(fd) == 1
    assert not edu.vdev.ctx[0].masked
    bar_write(edu, EDU_IRQ_RAISE, 1)  # a real assertion is still delivered
    assert count(fd) == 1


def test_intx_needs_no_bus_master(edu, efds) -> None:
    fd = efds.new()
    set_trigger(edu, INTX, fd)
    assert not edu.hw.bus_master
    bar_write(edu, EDU_IRQ_RAISE, 1)
    assert count(fd) == 1


def test_unmask_eventfd_processed_at_next_entry(edu, efds) -> None:
    fd, unmask = efds.new(), efds.new()
    set_trigger(edu, INTX, fd)
    set_irqs(edu, UNMASK_EVENTFD, INTX, 0, 1, fds_data(unmask))
    bar_write(edu, EDU_IRQ_RAISE, 1)
    assert count(fd) == 1
    bar_write(edu, EDU_IRQ_ACK, 1)
    with edu.k.machine.lock:  # keep the waiter thread out: the next entry handles it
        os.eventfd_write(unmask, 1)
        bar_write(edu, EDU_IRQ_RAISE, 1)
    assert count(fd) == 1
    assert count(unmask) == 0  # consumed by the model (virqfd reads the count)


def test_unmask_eventfd_resignals_without_a_call(edu, efds) -> None:
    """The virqfd waiter: writing the unmask eventfd while the device still asserts
    re-signals the trigger with no call into the model."""
    fd, unmask = efds.new(), efds.new()
    set_trigger(edu, INTX, fd)
    set_irqs(edu, UNMASK_EVENTFD, INTX, 0, 1, fds_data(unmask))
    bar_write(edu, EDU_IRQ_RAISE, 1)
    assert count(fd) == 1
    os.eventfd_write(unmask, 1)
    ready, _, _ = select.select([fd], [], [], 5.0)
    assert ready == [fd]
    assert count(fd) == 1


def test_unmask_eventfd_removed_with_intx(edu, efds) -> None:
    fd, unmask = efds.new(), efds.new()
    set_trigger(edu, INTX, fd)
    set_irqs(edu, UNMASK_EVENTFD, INTX, 0, 1, fds_data(unmask))
    assert edu.vdev.ctx[0].unmask is not None
    disable_irqs(edu, INTX)
    assert edu.vdev.ctx == {}
    os.eventfd_write(unmask, 1)
    assert count(unmask) == 1  # nobody consumes it any more
