"""VFIO_DEVICE_SET_IRQS: the validation table, the per-index rules and the checklist of
SPEC §11.5 (vfio-pci errnos, Linux 6.18 unless a test names a profile)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest
from device_helpers import (
    DMACOPY,
    TRIGGER_BOOL,
    TRIGGER_EVENTFD,
    TRIGGER_NONE,
    EventFds,
    count,
    disable_irqs,
    expect_errno,
    fds_data,
    irq_set_bytes,
    open_device,
    set_irqs,
    set_trigger,
)

from vfiosim.uapi import vfio as V

INTX, MSI, MSIX, ERR, REQ = (V.VFIO_PCI_INTX_IRQ_INDEX, V.VFIO_PCI_MSI_IRQ_INDEX,
                             V.VFIO_PCI_MSIX_IRQ_INDEX, V.VFIO_PCI_ERR_IRQ_INDEX,
                             V.VFIO_PCI_REQ_IRQ_INDEX)
NONE, BOOL, EVENTFD = (V.VFIO_IRQ_SET_DATA_NONE, V.VFIO_IRQ_SET_DATA_BOOL,
                       V.VFIO_IRQ_SET_DATA_EVENTFD)
MASK, UNMASK, TRIGGER = (V.VFIO_IRQ_SET_ACTION_MASK, V.VFIO_IRQ_SET_ACTION_UNMASK,
                         V.VFIO_IRQ_SET_ACTION_TRIGGER)


@pytest.fixture
def efds() -> Iterator[EventFds]:
    e = EventFds()
    yield e
    e.close()


@pytest.fixture
def dev(x86):  # noqa: ANN001, ANN201
    return open_device(x86)


# ---------------------------------------------------------------------------------------------
# The checklist (SPEC §11.5), edu on x86


@pytest.mark.parametrize("case,flags,index,start,cnt,data,argsz,code", [
    ("argsz below 20", TRIGGER_NONE, MSI, 0, 1, b"", 3, errno.EINVAL),
    ("index out of range", TRIGGER_NONE, 5, 0, 1, b"", None, errno.EINVAL),
    ("index far out of range", TRIGGER_NONE, 0xFFFF_FFFF, 0, 1, b"", None, errno.EINVAL),
    ("unknown flag bits", 0x40 | TRIGGER_NONE, MSI, 0, 1, b"", None, errno.EINVAL),
    ("two data types", MASK | NONE | BOOL, INTX, 0, 1, b"\x01", None, errno.EINVAL),
    ("no data type", MASK | UNMASK, INTX, 0, 0, b"", None, errno.EINVAL),
    ("start + count past the index", TRIGGER_NONE, MSI, 0, 2, b"", None, errno.EINVAL),
    ("start past the index", TRIGGER_NONE, MSI, 1, 0, b"", None, errno.EINVAL),
    ("MSI-X has no vectors", TRIGGER_NONE, MSIX, 0, 0, b"", None, errno.EINVAL),
    ("MSI-X has no vectors, eventfd", TRIGGER_EVENTFD, MSIX, 0, 1, fds_data(-1), None,
     errno.EINVAL),
    ("ERR on conventional PCI", TRIGGER_NONE, ERR, 0, 1, b"", None, errno.EINVAL),
    ("ERR mask", MASK | NONE, ERR, 0, 0, b"", None, errno.EINVAL),
    ("count wraps", TRIGGER_NONE, MSI, 1, 0xFFFF_FFFF, b"", None, errno.EINVAL),
    ("count wraps at start 0", TRIGGER_NONE, MSI, 0, 0xFFFF_FFFF, b"", None, errno.EINVAL),
    ("BOOL data too short", TRIGGER_BOOL, MSI, 0, 1, b"", 20, errno.EINVAL),
    ("EVENTFD array too short", TRIGGER_EVENTFD, MSI, 0, 1, b"", 20, errno.EINVAL),
    ("EVENTFD array 3 bytes", TRIGGER_EVENTFD, MSI, 0, 1, b"\xff\xff\xff", 23, errno.EINVAL),
    ("two actions", MASK | UNMASK | NONE, INTX, 0, 1, b"", None, errno.ENOTTY),
    ("no action", NONE, INTX, 0, 1, b"", None, errno.ENOTTY),
    ("MASK on MSI", MASK | NONE, MSI, 0, 1, b"", None, errno.ENOTTY),
    ("UNMASK on MSI", UNMASK | NONE, MSI, 0, 1, b"", None, errno.ENOTTY),
    ("MASK on REQ", MASK | NONE, REQ, 0, 1, b"", None, errno.ENOTTY),
    ("UNMASK on REQ", UNMASK | BOOL, REQ, 0, 1, b"\x01", None, errno.ENOTTY),
    ("REQ count 2", TRIGGER_NONE, REQ, 0, 2, b"", None, errno.EINVAL),
    ("BOOL count 0, MSI not enabled", TRIGGER_BOOL, MSI, 0, 0, b"", None, errno.EINVAL),
    ("loopback, MSI not enabled", TRIGGER_NONE, MSI, 0, 1, b"", None, errno.EINVAL),
    ("disable a REQ trigger never set", TRIGGER_NONE, REQ, 0, 0, b"", None, errno.EINVAL),
    ("MSI EVENTFD count 0: no vector to enable", TRIGGER_EVENTFD, MSI, 0, 0, b"", None,
     errno.ERANGE),
    ("INTx MASK, INTx not enabled", MASK | NONE, INTX, 0, 1, b"", None, errno.EINVAL),
    ("INTx UNMASK, INTx not enabled", UNMASK | NONE, INTX, 0, 1, b"", None, errno.EINVAL),
    ("INTx loopback, INTx not enabled", TRIGGER_NONE, INTX, 0, 1, b"", None, errno.EINVAL),
    ("INTx disable, INTx not enabled", TRIGGER_NONE, INTX, 0, 0, b"", None, errno.EINVAL),
    ("REQ BOOL count 0", TRIGGER_BOOL, REQ, 0, 0, b"", None, errno.EINVAL),
    ("REQ EVENTFD count 0", TRIGGER_EVENTFD, REQ, 0, 0, b"", None, errno.EINVAL),
])
def test_checklist_errors(dev, case: str, flags: int, index: int, start: int, cnt: int,
                          data: bytes, argsz: int | None, code: int) -> None:
    buf = irq_set_bytes(flags, index, start, cnt, data, argsz)
    buf += bytes(max(0, 24 - len(buf)))  # room, so that EFAULT is never the answer
    expect_errno(code, dev.k.ioctl, dev.fd, V.VFIO_DEVICE_SET_IRQS, buf)


def test_data_that_cannot_be_read_efault(dev) -> None:
    """#8: argsz promises data the buffer does not hold."""
    buf = irq_set_bytes(TRIGGER_EVENTFD, MSI, 0, 1, b"", argsz=24)
    expect_errno(errno.EFAULT, dev.k.ioctl, dev.fd, V.VFIO_DEVICE_SET_IRQS, buf)


def test_header_that_cannot_be_read_efault(dev) -> None:
    expect_errno(errno.EFAULT, dev.k.ioctl, dev.fd, V.VFIO_DEVICE_SET_IRQS, bytearray(19))


def test_validation_before_data_read(dev) -> None:
    """Validation (#1-#7) comes before the copy of data[] (#8): a bad index with a short
    buffer is EINVAL, not EFAULT."""
    buf = irq_set_bytes(TRIGGER_EVENTFD, 5, 0, 1, b"", argsz=24)
    expect_errno(errno.EINVAL, dev.k.ioctl, dev.fd, V.VFIO_DEVICE_SET_IRQS, buf)


def test_eventfd_not_open_ebadf(dev) -> None:
    expect_errno(errno.EBADF, set_trigger, dev, MSI, 999)
    expect_errno(errno.EBADF, set_trigger, dev, INTX, 999)
    expect_errno(errno.EBADF, set_trigger, dev, REQ, 999)


def test_fd_not_an_eventfd_einval(dev) -> None:
    r, w = os.pipe()
    try:
        expect_errno(errno.EINVAL, set_trigger, dev, MSI, r)
        expect_errno(errno.EINVAL, set_trigger, dev, INTX, w)
        expect_errno(errno.EINVAL, set_trigger, dev, REQ, r)
    finally:
        os.close(r)
        os.close(w)
    # nothing stayed enabled: INTx can be enabled now, then MSI cannot
    assert dev.vdev.irq_type == V.VFIO_PCI_NUM_IRQS


def test_failed_msi_enable_leaves_nothing(dev) -> None:
    expect_errno(errno.EBADF, set_trigger, dev, MSI, 999)
    assert dev.k.machine.msi.vectors() == []
    expect_errno(errno.EINVAL, set_irqs, dev, TRIGGER_NONE, MSI, 0, 1)  # still not enabled


# ---------------------------------------------------------------------------------------------
# MSI


def test_enable_msi_and_loopback(dev, efds) -> None:
    fd = efds.new()
    assert set_trigger(dev, MSI, fd) == 0
    assert count(fd) == 0
    assert set_irqs(dev, TRIGGER_NONE, MSI, 0, 1) == 0
    assert count(fd) == 1
    assert set_irqs(dev, TRIGGER_BOOL, MSI, 0, 1, b"\x00") == 0
    assert count(fd) == 0
    assert set_irqs(dev, TRIGGER_BOOL, MSI, 0, 1, b"\x01") == 0
    assert count(fd) == 1
    # BOOL count 0 with MSI enabled: accepted, nothing signalled
    assert set_irqs(dev, TRIGGER_BOOL, MSI, 0, 0) == 0
    assert count(fd) == 0


def test_bool_data_longer_than_needed_ignored(dev, efds) -> None:
    fd = efds.new()
    set_trigger(dev, MSI, fd)
    assert set_irqs(dev, TRIGGER_BOOL, MSI, 0, 1, b"\x01\x00\x00", argsz=23) == 0
    assert count(fd) == 1
    # an EVENTFD array with trailing garbage
    fd2 = efds.new()
    assert set_irqs(dev, TRIGGER_EVENTFD, MSI, 0, 1, fds_data(fd2) + b"\xff" * 8) == 0
    set_irqs(dev, TRIGGER_NONE, MSI, 0, 1)
    assert (count(fd), count(fd2)) == (0, 1)


def test_msi_while_intx_enabled_einval(dev, efds) -> None:
    set_trigger(dev, INTX, efds.new())
    expect_errno(errno.EINVAL, set_trigger, dev, MSI, efds.new())
    expect_errno(errno.EINVAL, set_irqs, dev, TRIGGER_NONE, MSI, 0, 1)
    disable_irqs(dev, INTX)
    assert set_trigger(dev, MSI, efds.new()) == 0
    # and INTx while MSI is enabled
    expect_errno(errno.EINVAL, set_trigger, dev, INTX, efds.new())


def test_msi_disable_frees_hwirqs_and_reenable_reuses(dev, efds) -> None:
    msi = dev.k.machine.msi
    set_trigger(dev, MSI, efds.new())
    vecs = msi.vectors()
    assert len(vecs) == 1
    data = vecs[0].data
    assert disable_irqs(dev, MSI) == 0
    assert msi.vectors() == []
    expect_errno(errno.EINVAL, set_irqs, dev, TRIGGER_NONE, MSI, 0, 1)
    set_trigger(dev, MSI, efds.new())
    assert [v.data for v in msi.vectors()] == [data]


def test_msi_vector_fd_minus_one_removes_trigger(dev, efds) -> None:
    fd = efds.new()
    set_trigger(dev, MSI, fd)
    assert set_trigger(dev, MSI, -1) == 0  # index enabled: the trigger goes, MSI stays on
    assert dev.k.machine.msi.vectors() == []
    assert set_irqs(dev, TRIGGER_NONE, MSI, 0, 1) == 0  # loopback skips it
    assert count(fd) == 0
    fd2 = efds.new()
    assert set_trigger(dev, MSI, fd2) == 0
    set_irqs(dev, TRIGGER_NONE, MSI, 0, 1)
    assert (count(fd), count(fd2)) == (0, 1)


def test_msi_enable_with_fd_minus_one_allocates_nothing(dev, efds) -> None:
    assert set_trigger(dev, MSI, -1) == 0
    assert dev.k.machine.msi.vectors() == []
    assert set_irqs(dev, TRIGGER_NONE, MSI, 0, 1) == 0  # enabled: loopback accepted


def test_msi_replace_trigger(dev, efds) -> None:
    a, b = efds.new(), efds.new()
    set_trigger(dev, MSI, a)
    set_trigger(dev, MSI, b)
    set_irqs(dev, TRIGGER_NONE, MSI, 0, 1)
    assert (count(a), count(b)) == (0, 1)
    assert len(dev.k.machine.msi.vectors()) == 1


# ---------------------------------------------------------------------------------------------
# MSI-X (dmacopy): block rollback, vectors past the enable (§2.7 #15)


def test_msix_partial_failure_undoes_everything(x86, efds) -> None:
    dev = open_device(x86, DMACOPY)
    good = efds.new()
    expect_errno(errno.EBADF, set_trigger, dev, MSIX, good, 999)
    assert x86.machine.msi.vectors() == []
    assert dev.vdev.ctx == {}
    expect_errno(errno.EINVAL, set_irqs, dev, TRIGGER_NONE, MSIX, 0, 1)  # not enabled


def test_msix_vectors_past_enable_dynamic_on_6_18(x86, efds) -> None:
    """6.5+: MSI-X grows on x86 (dynamic allocation); loopback skips vectors without
    trigger."""
    dev = open_device(x86, DMACOPY)
    a, b = efds.new(), efds.new()
    assert set_trigger(dev, MSIX, a) == 0  # enables 1 vector
    assert set_trigger(dev, MSIX, b, start=2) == 0  # vector 2, beyond the enable
    assert set_irqs(dev, TRIGGER_NONE, MSIX, 0, 3) == 0
    assert (count(a), count(b)) == (1, 1)
    assert set_irqs(dev, TRIGGER_BOOL, MSIX, 0, 3, b"\x00\x01\x01") == 0
    assert (count(a), count(b)) == (0, 1)


def test_msix_vectors_past_enable_einval_before_6_5(make_kernel, efds) -> None:
    k = make_kernel("x86", kernel="6.1")
    dev = open_device(k, DMACOPY)
    a = efds.new()
    set_trigger(dev, MSIX, a)
    expect_errno(errno.EINVAL, set_trigger, dev, MSIX, efds.new(), start=1)
    expect_errno(errno.EINVAL, set_irqs, dev, TRIGGER_NONE, MSIX, 0, 2)
    assert set_irqs(dev, TRIGGER_NONE, MSIX, 0, 1) == 0
    assert count(a) == 1


def test_msix_fd_minus_one_past_enable_is_nothing(x86, efds) -> None:
    dev = open_device(x86, DMACOPY)
    set_trigger(dev, MSIX, efds.new())
    assert set_trigger(dev, MSIX, -1, start=3) == 0
    assert len(x86.machine.msi.vectors()) == 1


# ---------------------------------------------------------------------------------------------
# INTx


def test_intx_enable_disable(dev, efds) -> None:
    fd = efds.new()
    assert set_trigger(dev, INTX, fd) == 0
    assert set_irqs(dev, TRIGGER_NONE, INTX, 0, 1) == 0  # loopback
    assert count(fd) == 1
    assert set_irqs(dev, TRIGGER_BOOL, INTX, 0, 1, b"\x00") == 0
    assert count(fd) == 0
    assert set_irqs(dev, TRIGGER_BOOL, INTX, 0, 1, b"\x02") == 0
    assert count(fd) == 1
    assert disable_irqs(dev, INTX) == 0
    expect_errno(errno.EINVAL, set_irqs, dev, TRIGGER_NONE, INTX, 0, 1)


def test_intx_enable_without_trigger(dev, efds) -> None:
    assert set_trigger(dev, INTX, -1) == 0  # INTx on, no eventfd
    assert set_irqs(dev, TRIGGER_NONE, INTX, 0, 1) == 0  # nothing to signal
    fd = efds.new()
    assert set_trigger(dev, INTX, fd) == 0  # now set the trigger
    set_irqs(dev, TRIGGER_NONE, INTX, 0, 1)
    assert count(fd) == 1
    assert set_trigger(dev, INTX, -1) == 0  # removed; INTx stays enabled
    set_irqs(dev, TRIGGER_NONE, INTX, 0, 1)
    assert count(fd) == 0


def test_intx_mask_unmask_validation(dev, efds) -> None:
    set_trigger(dev, INTX, efds.new())
    assert set_irqs(dev, MASK | NONE, INTX, 0, 1) == 0
    assert set_irqs(dev, UNMASK | NONE, INTX, 0, 1) == 0
    assert set_irqs(dev, MASK | BOOL, INTX, 0, 1, b"\x01") == 0
    assert set_irqs(dev, UNMASK | BOOL, INTX, 0, 1, b"\x00") == 0
    expect_errno(errno.ENOTTY, set_irqs, dev, MASK | EVENTFD, INTX, 0, 1, fds_data(efds.new()))
    expect_errno(errno.EINVAL, set_irqs, dev, MASK | NONE, INTX, 0, 0)
    expect_errno(errno.EINVAL, set_irqs, dev, UNMASK | NONE, INTX, 0, 0)


def test_unmask_eventfd_twice_ebusy(dev, efds) -> None:
    set_trigger(dev, INTX, efds.new())
    u1, u2 = efds.new(), efds.new()
    assert set_irqs(dev, UNMASK | EVENTFD, INTX, 0, 1, fds_data(u1)) == 0
    # the fd itself is checked first
    expect_errno(errno.EBADF, set_irqs, dev, UNMASK | EVENTFD, INTX, 0, 1, fds_data(999))
    expect_errno(errno.EBUSY, set_irqs, dev, UNMASK | EVENTFD, INTX, 0, 1, fds_data(u2))
    # a negative fd removes it; then another can be set
    assert set_irqs(dev, UNMASK | EVENTFD, INTX, 0, 1, fds_data(-1)) == 0
    assert set_irqs(dev, UNMASK | EVENTFD, INTX, 0, 1, fds_data(u2)) == 0


# ---------------------------------------------------------------------------------------------
# ERR / REQ


def test_req_trigger_rules(dev, efds) -> None:
    fd = efds.new()
    assert set_trigger(dev, REQ, fd) == 0
    assert set_irqs(dev, TRIGGER_NONE, REQ, 0, 1) == 0
    assert count(fd) == 1
    assert set_irqs(dev, TRIGGER_BOOL, REQ, 0, 1, b"\x01") == 0
    assert count(fd) == 1
    assert set_irqs(dev, TRIGGER_BOOL, REQ, 0, 1, b"\x00") == 0
    assert count(fd) == 0
    assert set_trigger(dev, REQ, -2) == 0  # fd < -1: ignored, trigger kept
    set_irqs(dev, TRIGGER_NONE, REQ, 0, 1)
    assert count(fd) == 1
    assert set_irqs(dev, TRIGGER_NONE, REQ, 0, 0) == 0  # NONE count 0 removes it
    expect_errno(errno.EINVAL, set_irqs, dev, TRIGGER_NONE, REQ, 0, 1)  # none set now
    assert set_irqs(dev, TRIGGER_BOOL, REQ, 0, 1, b"\x01") == 0  # BOOL without trigger: 0
    assert set_trigger(dev, REQ, fd) == 0
    assert set_trigger(dev, REQ, -1) == 0  # -1 removes
    expect_errno(errno.EINVAL, set_irqs, dev, TRIGGER_NONE, REQ, 0, 1)


def test_err_on_pcie(x86, efds) -> None:
    dev = open_device(x86, DMACOPY)
    fd = efds.new()
    assert set_trigger(dev, ERR, fd) == 0
    assert set_irqs(dev, TRIGGER_NONE, ERR, 0, 1) == 0
    assert count(fd) == 1
    expect_errno(errno.ENOTTY, set_irqs, dev, MASK | NONE, ERR, 0, 1)


def test_close_puts_every_eventfd(x86, efds) -> None:
    """close_device(): IRQs torn down, ERR/REQ triggers put (no model dup of the eventfd
    stays open), hwirqs freed."""
    dev = open_device(x86)
    fd, req = efds.new(), efds.new()
    set_trigger(dev, MSI, fd)
    set_trigger(dev, REQ, req)
    before = len(os.listdir("/proc/self/fd"))
    x86.close(dev.fd)
    assert len(os.listdir("/proc/self/fd")) == before - 2
    assert x86.machine.msi.vectors() == []
    assert dev.vdev.irq_type == V.VFIO_PCI_NUM_IRQS


def test_msix_vector_past_enable_einval_on_pamu(make_kernel, efds) -> None:
    """No dynamic MSI-X on the Freescale MSI controller: a vector the enable did not
    allocate is EINVAL (fd -1 there is nothing), checked before any bank window lookup."""
    from vfiosim.uapi.vfio_pamu import VFIO_FSL_PAMU_IOMMU

    k = make_kernel("p4080")
    dev = open_device(k, "0001:01:00.0", iommu=VFIO_FSL_PAMU_IOMMU)
    assert set_trigger(dev, MSIX, -1) == 0  # enables one vector, no hwirq, no window needed
    expect_errno(errno.EINVAL, set_trigger, dev, MSIX, efds.new(), start=1)
    assert set_trigger(dev, MSIX, -1, start=1) == 0
    # vector 0 exists: without a bank window its hwirq cannot be reached
    free = [b.free_count() for b in k.machine.msi.banks]
    expect_errno(errno.ENODEV, set_trigger, dev, MSIX, efds.new())
    assert [b.free_count() for b in k.machine.msi.banks] == free  # nothing stays allocated
