"""vfio-pci interrupts: VFIO_DEVICE_SET_IRQS, INTx, MSI and MSI-X.

Models drivers/vfio/pci/vfio_pci_intrs.c (Linux 6.18, with the §2.7 #15 fork for older
profiles), ``vfio_set_irqs_validate_and_prepare()`` of drivers/vfio/vfio_main.c and the virqfd
helper of drivers/vfio/virqfd.c.  SPEC §9.1, §9.2, §11.5.

State lives on the device (``vdev``) with the kernel's names: ``irq_type`` (the enabled index,
``VFIO_PCI_NUM_IRQS`` for none), ``ctx`` (vector -> :class:`IrqCtx`, the kernel's xarray),
``virq_disabled`` (the virtual INTx disable bit), ``msi_qmax``, ``err_trigger``,
``req_trigger``.

Model choices:

* MSI/MSI-X hwirqs are allocated per vector, only for vectors given an eventfd (SPEC Appendix
  B, decision D6): ``machine.msi.alloc()``, the address the device must write is
  ``backend.msi_address(group, doorbell)`` (ENODEV on PAMU without a bank window, after which
  nothing the call set stays allocated), the device is programmed with ``hw.msi_program`` and
  the host irq's handler signals the vector's eventfd.  Removing a vector's eventfd frees its
  hwirq.
* INTx masking is the kernel's ``ctx->masked`` flag (the PCI 2.3 DisINTx path): an assertion
  while masked is not delivered; an unmask while the device still asserts re-signals and
  stays masked, as ``pci_check_and_unmask_intx()`` failing does.
* The INTx unmask eventfd (virqfd) is served by a daemon thread per registration that waits
  for the eventfd to become readable, then takes ``machine.lock``, consumes the count and
  unmasks -- the kernel's poll wakeup.  So that tests need not wait for a thread, every entry
  into the device (ioctl, read, write) and every INTx assertion first drains pending unmask
  eventfds the same way (:func:`vfio_virqfd_poll_all`).  Whoever reads the count first
  handles it, so a write is handled exactly once.
"""

from __future__ import annotations

import errno
import os
import select
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vfiosim.kernel.sanitizer import check_argsz
from vfiosim.kernel.uaccess import EventFd, Process, UserArg, kerr, read_struct
from vfiosim.kernel.vfio_main import vfio_set_irqs_validate_and_prepare
from vfiosim.uapi.vfio import (
    VFIO_IRQ_SET_ACTION_MASK,
    VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_TYPE_MASK,
    VFIO_IRQ_SET_ACTION_UNMASK,
    VFIO_IRQ_SET_DATA_BOOL,
    VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_ERR_IRQ_INDEX,
    VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_PCI_NUM_IRQS,
    VFIO_PCI_REQ_IRQ_INDEX,
    offsetofend,
    vfio_irq_set,
)

if TYPE_CHECKING:
    from vfiosim.kernel.pci.core import VfioPciDevice



# ---------------------------------------------------------------------------------------------
# virqfd (drivers/vfio/virqfd.c)


class Virqfd:
    """``struct virqfd``: an eventfd whose signal runs ``handler`` (and ``thread`` when the
    handler asks for it), used for the INTx unmask eventfd."""

    def __init__(self, vdev: VfioPciDevice, eventfd: EventFd,
                 handler: Callable[[VfioPciDevice, Any], int],
                 thread: Callable[[VfioPciDevice, Any], None], data: Any) -> None:
        self.vdev = vdev
        self.eventfd = eventfd
        self.handler = handler
        self.thread = thread
        self.data = data
        self._stop_r, self._stop_w = os.pipe()
        self._closed = False
        self._waiter = threading.Thread(target=self._run, name=f"virqfd-{vdev.name}",
                                        daemon=True)
        self._waiter.start()

    def poll(self) -> bool:
        """If the eventfd is readable: consume its count and run the handler.  Caller holds
        ``machine.lock``.  Returns True if it fired."""
        fd = self.eventfd.fd
        if self._closed or fd < 0:
            return False
        try:
            ready, _, _ = select.select([fd], [], [], 0)
        except (OSError, ValueError):
            return False
        if not ready:
            return False
        try:
            os.eventfd_read(fd)  # eventfd_ctx_do_read(): the count is consumed
        except (BlockingIOError, OSError):
            return False
        if self.handler(self.vdev, self.data) > 0:
            self.thread(self.vdev, self.data)
        return True

    def _run(self) -> None:
        try:
            while not self._closed:
                fd = self.eventfd.fd
                if fd < 0:
                    return
                try:
                    ready, _, _ = select.select([fd, self._stop_r], [], [])
                except (OSError, ValueError):
                    return
                if self._stop_r in ready or self._closed:
                    return
                with self.vdev.machine.lock:
                    if self._closed:
                        return
                    self.poll()
        finally:
            os.close(self._stop_r)
            os.close(self._stop_w)

    def shutdown(self) -> None:
        """``virqfd_shutdown()``: stop waiting and drop the eventfd reference.

        Called with ``machine.lock`` held, so the waiter is not joined (it may be waiting for
        the lock); it sees ``_closed`` and exits, closing its wake-up pipe itself.
        """
        if self._closed:
            return
        self._closed = True
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        self.eventfd.put()


def vfio_virqfd_enable(vdev: VfioPciDevice, proc: Process,
                       handler: Callable[[VfioPciDevice, Any], int],
                       thread: Callable[[VfioPciDevice, Any], None], data: Any,
                       ctx: IrqCtx, slot: str, fd: int) -> int:
    """``vfio_virqfd_enable()``: the fd is checked (EBADF / EINVAL) before the slot (EBUSY).

    As the kernel does, an eventfd that is already signalled is handled at once.
    """
    eventfd = proc.eventfd_get(fd)
    if getattr(ctx, slot) is not None:
        eventfd.put()
        raise kerr(errno.EBUSY)
    virqfd = Virqfd(vdev, eventfd, handler, thread, data)
    setattr(ctx, slot, virqfd)
    virqfd.poll()
    return 0


def vfio_virqfd_disable(ctx: IrqCtx, slot: str) -> None:
    """``vfio_virqfd_disable()``."""
    virqfd = getattr(ctx, slot)
    if virqfd is not None:
        setattr(ctx, slot, None)
        virqfd.shutdown()


def vfio_virqfd_poll_all(vdev: VfioPciDevice) -> None:
    """Handle unmask eventfds the user has written since the model last looked."""
    for ctx in list(vdev.ctx.values()):
        if ctx.unmask is not None:
            ctx.unmask.poll()


# ---------------------------------------------------------------------------------------------
# State


@dataclass
class IrqCtx:
    """``struct vfio_pci_irq_ctx``; ``vec``/``address`` are the model's hwirq record."""

    trigger: EventFd | None = None
    unmask: Virqfd | None = None
    mask: Virqfd | None = None
    masked: bool = False
    vec: Any = None  # hw.irq.MsiVector of this MSI/MSI-X vector
    address: int = 0  # the address programmed into the device for it


def irq_is(vdev: VfioPciDevice, irq_type: int) -> bool:
    return vdev.irq_type == irq_type


def is_intx(vdev: VfioPciDevice) -> bool:
    return vdev.irq_type == VFIO_PCI_INTX_IRQ_INDEX


def is_msi(vdev: VfioPciDevice) -> bool:
    return vdev.irq_type == VFIO_PCI_MSI_IRQ_INDEX


def is_irq_none(vdev: VfioPciDevice) -> bool:
    return vdev.irq_type not in (VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX,
                                 VFIO_PCI_MSIX_IRQ_INDEX)


# ---------------------------------------------------------------------------------------------
# INTx


def vfio_send_intx_eventfd(vdev: VfioPciDevice, ctx: IrqCtx | None) -> None:
    """``vfio_send_intx_eventfd()``: nothing while the virtual INTx disable bit is set."""
    if is_intx(vdev) and not vdev.virq_disabled and ctx is not None:
        if ctx.trigger is not None:
            ctx.trigger.signal()


def vfio_pci_intx_mask(vdev: VfioPciDevice) -> bool:
    """``__vfio_pci_intx_mask()``: always mask (ioctl, or INTx disable set in config)."""
    if not is_intx(vdev):
        return False
    ctx = vdev.ctx.get(0)
    if ctx is None or ctx.masked:
        return False
    ctx.masked = True
    return True


def vfio_pci_intx_unmask_handler(vdev: VfioPciDevice, ctx: Any) -> int:
    """``vfio_pci_intx_unmask_handler()``: > 0 when the device still asserts INTx, in which
    case the interrupt is re-sent to the user and INTx stays masked."""
    if not is_intx(vdev):
        return 0
    ctx = vdev.ctx.get(0)
    if ctx is None:
        return 0
    ret = 0
    if ctx.masked and not vdev.virq_disabled:
        if vdev.intx_asserted():  # pci_check_and_unmask_intx() finds it pending
            ret = 1
        ctx.masked = ret > 0
    return ret


def _send_intx_thread(vdev: VfioPciDevice, data: Any) -> None:
    vfio_send_intx_eventfd(vdev, vdev.ctx.get(0))


def vfio_pci_intx_unmask(vdev: VfioPciDevice) -> None:
    """``__vfio_pci_intx_unmask()``."""
    if vfio_pci_intx_unmask_handler(vdev, None) > 0:
        vfio_send_intx_eventfd(vdev, vdev.ctx.get(0))


def vfio_intx_handler(vdev: VfioPciDevice) -> None:
    """``vfio_intx_handler()``: the device asserted INTx; automask and signal."""
    if not is_intx(vdev):
        return
    ctx = vdev.ctx.get(0)
    if ctx is None or ctx.masked:
        return
    ctx.masked = True
    vfio_send_intx_eventfd(vdev, ctx)


def vfio_intx_enable(vdev: VfioPciDevice, trigger: EventFd | None) -> None:
    """``vfio_intx_enable()``: EINVAL if another type is enabled, ENODEV without a pin."""
    if not is_irq_none(vdev):
        raise kerr(errno.EINVAL)
    if not vdev.intx_pin():
        raise kerr(errno.ENODEV)
    # The initial masked state follows virq_disabled.
    vdev.ctx[0] = IrqCtx(trigger=trigger, masked=vdev.virq_disabled)
    vdev.irq_type = VFIO_PCI_INTX_IRQ_INDEX
    # request_irq() on a level-triggered line already asserted runs the handler at once.
    if vdev.intx_asserted():
        vfio_intx_handler(vdev)


def vfio_intx_set_signal(vdev: VfioPciDevice, trigger: EventFd | None) -> None:
    """``vfio_intx_set_signal()``: replace the trigger."""
    ctx = vdev.ctx[0]
    old = ctx.trigger
    ctx.trigger = trigger
    if old is not None:
        old.put()


def vfio_intx_disable(vdev: VfioPciDevice) -> None:
    """``vfio_intx_disable()``."""
    ctx = vdev.ctx.pop(0, None)
    if ctx is not None:
        vfio_virqfd_disable(ctx, "unmask")
        vfio_virqfd_disable(ctx, "mask")
        if ctx.trigger is not None:
            ctx.trigger.put()
    vdev.irq_type = VFIO_PCI_NUM_IRQS


# ---------------------------------------------------------------------------------------------
# MSI / MSI-X


def _msi_kind(msix: bool) -> str:
    return "msix" if msix else "msi"


def vfio_msi_enable(vdev: VfioPciDevice, nvec: int, msix: bool) -> None:
    """``vfio_msi_enable()``.

    ``pci_alloc_irq_vectors(pdev, 1, nvec, ...)`` refuses ``nvec`` 0 with ERANGE.  The model
    allocates hwirqs lazily, per vector given an eventfd (:func:`vfio_msi_set_vector_signal`).
    """
    if not is_irq_none(vdev):
        raise kerr(errno.EINVAL)
    if nvec < 1:
        raise kerr(errno.ERANGE)  # __pci_enable_msi(x)_range: maxvec < minvec
    vdev.num_ctx = nvec
    vdev.hw.msi_set_enabled(_msi_kind(msix), nvec)
    vdev.irq_type = VFIO_PCI_MSIX_IRQ_INDEX if msix else VFIO_PCI_MSI_IRQ_INDEX
    if not msix:
        # The virtual hardware field for max msi vectors: log2 of the number of vectors.
        vdev.msi_qmax = (nvec * 2 - 1).bit_length() - 1


def _msi_vector_allocated(vdev: VfioPciDevice, vector: int, msix: bool) -> bool:
    """``vfio_msi_alloc_irq()``'s question: does ``pci_irq_vector()`` know the vector, or can
    dynamic MSI-X allocate it?"""
    if vector < vdev.num_ctx:
        return True
    return msix and vdev.has_dyn_msix and vector < vdev.msix_table_size()


def _msi_free_vec(vdev: VfioPciDevice, ctx: IrqCtx) -> None:
    if ctx.vec is not None:
        vdev.machine.msi.set_handler(ctx.vec, None)
        vdev.machine.msi.free(ctx.vec)
        ctx.vec = None


def vfio_msi_set_vector_signal(vdev: VfioPciDevice, proc: Process | None, vector: int,
                               fd: int, msix: bool) -> None:
    """``vfio_msi_set_vector_signal()``: remove, replace or set one vector's trigger.

    Model order for a new trigger (SPEC §9.1): the vector must exist (EINVAL), the eventfd is
    looked up (EBADF / EINVAL), then the hwirq is allocated and the address the device must
    write is asked of the IOMMU backend (ENODEV), the device is programmed and the host irq
    handler set.
    """
    ctx = vdev.ctx.get(vector)
    if ctx is not None:
        _msi_free_vec(vdev, ctx)
        if ctx.trigger is not None:
            ctx.trigger.put()
        del vdev.ctx[vector]
    if fd < 0:
        return
    if not _msi_vector_allocated(vdev, vector, msix):
        raise kerr(errno.EINVAL)
    assert proc is not None
    trigger = proc.eventfd_get(fd)
    machine = vdev.machine
    vec = machine.msi.alloc()
    if vec is None:
        trigger.put()
        raise kerr(errno.ENOSPC)
    try:
        address = vdev.msi_address(vec.address)
    except OSError:
        machine.msi.free(vec)
        trigger.put()
        raise
    ctx = IrqCtx(trigger=trigger, vec=vec, address=address)
    vdev.ctx[vector] = ctx
    vdev.hw.msi_program(vector, address, vec.data)
    machine.msi.set_handler(vec, trigger.signal)  # request_irq(irq, vfio_msihandler, ...)


def vfio_msi_set_block(vdev: VfioPciDevice, proc: Process | None, start: int, count: int,
                       fds: list[int] | None, msix: bool) -> None:
    """``vfio_msi_set_block()``: on an error, the vectors this call set are cleared again.

    Profiles older than 6.5 check the range against the enabled vectors first (§2.7 #15).
    """
    if vdev.profile.before("6.5") and (start >= vdev.num_ctx or start + count > vdev.num_ctx):
        raise kerr(errno.EINVAL)
    j = start
    try:
        for i in range(count):
            fd = fds[i] if fds is not None else -1
            vfio_msi_set_vector_signal(vdev, proc, j, fd, msix)
            j += 1
    except OSError:
        for k in range(start, j):
            vfio_msi_set_vector_signal(vdev, None, k, -1, msix)
        raise


def vfio_msi_disable(vdev: VfioPciDevice, msix: bool) -> None:
    """``vfio_msi_disable()``: every vector's trigger and hwirq go, the device stops MSI."""
    for i in sorted(vdev.ctx):
        ctx = vdev.ctx[i]
        vfio_virqfd_disable(ctx, "unmask")
        vfio_virqfd_disable(ctx, "mask")
        vfio_msi_set_vector_signal(vdev, None, i, -1, msix)
    vdev.hw.msi_set_enabled(None, 0)
    vdev.num_ctx = 0
    vdev.irq_type = VFIO_PCI_NUM_IRQS


# ---------------------------------------------------------------------------------------------
# The SET_IRQS actions


def vfio_pci_set_intx_unmask(vdev: VfioPciDevice, proc: Process, index: int, start: int,
                             count: int, flags: int, data: bytes) -> int:
    if not is_intx(vdev) or start != 0 or count != 1:
        raise kerr(errno.EINVAL)
    if flags & VFIO_IRQ_SET_DATA_NONE:
        vfio_pci_intx_unmask(vdev)
    elif flags & VFIO_IRQ_SET_DATA_BOOL:
        if data[0]:
            vfio_pci_intx_unmask(vdev)
    elif flags & VFIO_IRQ_SET_DATA_EVENTFD:
        ctx = vdev.ctx[0]
        fd = _fds(data, 1)[0]
        if fd >= 0:
            return vfio_virqfd_enable(vdev, proc, vfio_pci_intx_unmask_handler,
                                      _send_intx_thread, ctx, ctx, "unmask", fd)
        vfio_virqfd_disable(ctx, "unmask")
    return 0


def vfio_pci_set_intx_mask(vdev: VfioPciDevice, proc: Process, index: int, start: int,
                           count: int, flags: int, data: bytes) -> int:
    if not is_intx(vdev) or start != 0 or count != 1:
        raise kerr(errno.EINVAL)
    if flags & VFIO_IRQ_SET_DATA_NONE:
        vfio_pci_intx_mask(vdev)
    elif flags & VFIO_IRQ_SET_DATA_BOOL:
        if data[0]:
            vfio_pci_intx_mask(vdev)
    elif flags & VFIO_IRQ_SET_DATA_EVENTFD:
        # quirk: vfio_pci_set_intx_mask() has no eventfd masking (its source says it is left
        # to implement) and answers ENOTTY (SPEC §11.5).
        raise kerr(errno.ENOTTY)
    return 0


def vfio_pci_set_intx_trigger(vdev: VfioPciDevice, proc: Process, index: int, start: int,
                              count: int, flags: int, data: bytes) -> int:
    if is_intx(vdev) and not count and flags & VFIO_IRQ_SET_DATA_NONE:
        vfio_intx_disable(vdev)
        return 0
    if not (is_intx(vdev) or is_irq_none(vdev)) or start != 0 or count != 1:
        raise kerr(errno.EINVAL)
    if flags & VFIO_IRQ_SET_DATA_EVENTFD:
        fd = _fds(data, 1)[0]
        trigger = proc.eventfd_get(fd) if fd >= 0 else None
        try:
            if is_intx(vdev):
                vfio_intx_set_signal(vdev, trigger)
            else:
                vfio_intx_enable(vdev, trigger)
        except OSError:
            if trigger is not None:
                trigger.put()
            raise
        return 0
    if not is_intx(vdev):
        raise kerr(errno.EINVAL)
    # Loopback: signals without masking.
    if flags & VFIO_IRQ_SET_DATA_NONE:
        vfio_send_intx_eventfd(vdev, vdev.ctx.get(0))
    elif flags & VFIO_IRQ_SET_DATA_BOOL:
        if data[0]:
            vfio_send_intx_eventfd(vdev, vdev.ctx.get(0))
    return 0


def vfio_pci_set_msi_trigger(vdev: VfioPciDevice, proc: Process, index: int, start: int,
                             count: int, flags: int, data: bytes) -> int:
    msix = index == VFIO_PCI_MSIX_IRQ_INDEX
    if irq_is(vdev, index) and not count and flags & VFIO_IRQ_SET_DATA_NONE:
        vfio_msi_disable(vdev, msix)
        return 0
    if not (irq_is(vdev, index) or is_irq_none(vdev)):
        raise kerr(errno.EINVAL)
    if flags & VFIO_IRQ_SET_DATA_EVENTFD:
        fds = _fds(data, count)
        if vdev.irq_type == index:
            vfio_msi_set_block(vdev, proc, start, count, fds, msix)
            return 0
        vfio_msi_enable(vdev, start + count, msix)
        try:
            vfio_msi_set_block(vdev, proc, start, count, fds, msix)
        except OSError:
            vfio_msi_disable(vdev, msix)
            raise
        return 0
    if not irq_is(vdev, index):
        raise kerr(errno.EINVAL)
    # §2.7 #15: before 6.5 a loopback range past the enabled vectors is EINVAL.
    if vdev.profile.before("6.5") and start + count > vdev.num_ctx:
        raise kerr(errno.EINVAL)
    for i in range(start, start + count):
        ctx = vdev.ctx.get(i)
        if ctx is None or ctx.trigger is None:
            continue
        if flags & VFIO_IRQ_SET_DATA_NONE:
            ctx.trigger.signal()
        elif flags & VFIO_IRQ_SET_DATA_BOOL:
            if data[i - start]:
                ctx.trigger.signal()
    return 0


def vfio_pci_set_ctx_trigger_single(vdev: VfioPciDevice, proc: Process, attr: str,
                                    count: int, flags: int, data: bytes) -> int:
    """``vfio_pci_set_ctx_trigger_single()``: ERR and REQ (DATA_NONE/BOOL: loopback)."""
    cur: EventFd | None = getattr(vdev, attr)
    if flags & VFIO_IRQ_SET_DATA_NONE:
        if cur is not None:
            if count:
                cur.signal()
            else:
                cur.put()
                setattr(vdev, attr, None)
            return 0
    elif flags & VFIO_IRQ_SET_DATA_BOOL:
        if not count:
            raise kerr(errno.EINVAL)
        if data[0] and cur is not None:
            cur.signal()
        return 0
    elif flags & VFIO_IRQ_SET_DATA_EVENTFD:
        if not count:
            raise kerr(errno.EINVAL)
        fd = _fds(data, 1)[0]
        if fd == -1:
            if cur is not None:
                cur.put()
            setattr(vdev, attr, None)
        elif fd >= 0:
            efd = proc.eventfd_get(fd)
            if cur is not None:
                cur.put()
            setattr(vdev, attr, efd)
        return 0
    raise kerr(errno.EINVAL)


def vfio_pci_set_err_trigger(vdev: VfioPciDevice, proc: Process, index: int, start: int,
                             count: int, flags: int, data: bytes) -> int:
    if index != VFIO_PCI_ERR_IRQ_INDEX or start != 0 or count > 1:
        raise kerr(errno.EINVAL)
    return vfio_pci_set_ctx_trigger_single(vdev, proc, "err_trigger", count, flags, data)


def vfio_pci_set_req_trigger(vdev: VfioPciDevice, proc: Process, index: int, start: int,
                             count: int, flags: int, data: bytes) -> int:
    if index != VFIO_PCI_REQ_IRQ_INDEX or start != 0 or count > 1:
        raise kerr(errno.EINVAL)
    return vfio_pci_set_ctx_trigger_single(vdev, proc, "req_trigger", count, flags, data)


SetIrqsFn = Callable[["VfioPciDevice", Process, int, int, int, int, bytes], int]

#: The (index, action) dispatch of ``vfio_pci_set_irqs_ioctl()``; a missing entry is ENOTTY
#: (MSI/MSI-X MASK and UNMASK: "XXX Need masking support exported").  ERR is served only on
#: PCI Express devices (checked in :func:`vfio_pci_set_irqs_ioctl`).
SET_IRQS_DISPATCH: dict[tuple[int, int], SetIrqsFn] = {
    (VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_MASK): vfio_pci_set_intx_mask,
    (VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK): vfio_pci_set_intx_unmask,
    (VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER): vfio_pci_set_intx_trigger,
    (VFIO_PCI_MSI_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER): vfio_pci_set_msi_trigger,
    (VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER): vfio_pci_set_msi_trigger,
    (VFIO_PCI_ERR_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER): vfio_pci_set_err_trigger,
    (VFIO_PCI_REQ_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER): vfio_pci_set_req_trigger,
}


def vfio_pci_set_irqs_ioctl(vdev: VfioPciDevice, proc: Process, flags: int, index: int,
                            start: int, count: int, data: bytes) -> int:
    """``vfio_pci_set_irqs_ioctl()``: the (index, action) table; no entry -> ENOTTY."""
    func = SET_IRQS_DISPATCH.get((index, flags & VFIO_IRQ_SET_ACTION_TYPE_MASK))
    if index == VFIO_PCI_ERR_IRQ_INDEX and not vdev.hw.is_pcie:
        func = None
    if func is None:
        raise kerr(errno.ENOTTY)
    return func(vdev, proc, index, start, count, flags, data)


def _fds(data: bytes, count: int) -> list[int]:
    return list(struct.unpack_from(f"<{count}i", data)) if count else []


# ---------------------------------------------------------------------------------------------
# What is registered (the sanitizer's view, SPEC §13.8)

#: ``VFIO_PCI_*_IRQ_INDEX`` -> the name reports use.
IRQ_INDEX_NAMES = {VFIO_PCI_INTX_IRQ_INDEX: "INTx", VFIO_PCI_MSI_IRQ_INDEX: "MSI",
                   VFIO_PCI_MSIX_IRQ_INDEX: "MSI-X", VFIO_PCI_ERR_IRQ_INDEX: "ERR",
                   VFIO_PCI_REQ_IRQ_INDEX: "REQ"}


def registered_eventfds(vdev: VfioPciDevice) -> list[tuple[str, int, str, EventFd]]:
    """Every eventfd the device holds for its user: (index name, vector, "trigger" or
    "unmask", the reference), in index and vector order."""
    out: list[tuple[str, int, str, EventFd]] = []
    name = IRQ_INDEX_NAMES.get(vdev.irq_type, "")
    for vector in sorted(vdev.ctx):
        ctx = vdev.ctx[vector]
        if ctx.trigger is not None:
            out.append((name, vector, "trigger", ctx.trigger))
        if ctx.unmask is not None:
            out.append((name, vector, "unmask", ctx.unmask.eventfd))
    for index, attr in ((VFIO_PCI_ERR_IRQ_INDEX, "err_trigger"),
                        (VFIO_PCI_REQ_IRQ_INDEX, "req_trigger")):
        t = getattr(vdev, attr)
        if t is not None:
            out.append((IRQ_INDEX_NAMES[index], 0, "trigger", t))
    return out


# ---------------------------------------------------------------------------------------------
# The ioctl


def vfio_pci_ioctl_set_irqs(vdev: VfioPciDevice, proc: Process, arg: UserArg) -> int:
    """``vfio_pci_ioctl_set_irqs()``: header (EFAULT), validation, data (EFAULT), dispatch."""
    minsz = offsetofend(vfio_irq_set, "count")
    hdr = read_struct(arg, vfio_irq_set, minsz)
    max_irqs = vdev.get_irq_count(hdr.index)
    data_size = vfio_set_irqs_validate_and_prepare(hdr, max_irqs, VFIO_PCI_NUM_IRQS)
    # Sanitizer (SPEC §13.8): the header and exactly its data[]; more is never read.
    check_argsz(vdev.machine, "VFIO_DEVICE_SET_IRQS", "vfio_irq_set", hdr.argsz,
                (minsz + data_size,))
    data = arg.read(minsz, data_size) if data_size else b""  # memdup_user()
    return vfio_pci_set_irqs_ioctl(vdev, proc, hdr.flags, hdr.index, hdr.start, hdr.count,
                                   data)
