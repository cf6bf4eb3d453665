"""The sanitizer: client bugs the model notices.  SPEC §13.8, Appendix A #38, decision D3.

A real kernel answers a buggy client with an errno, or with nothing at all; the model can also
say *why*.  A check never changes an errno, a written byte or the order of the kernel's checks:
it only appends a :class:`SanitizerReport` to ``machine.sanitizer`` (``machine.report``), and
reads nothing the handler did not already read (SPEC §3.7 rule 2: bytes past ``minsz`` stay
unread).  Each check lives in the module that owns its rule (STYLE.md "One place per fact"):

==================  ===========================================================================
kind                 where, and what it reports
==================  ===========================================================================
``argsz``           every struct handler, once ``argsz >= minsz`` passed: an ``argsz`` that no
                    header's struct had and no variable part explains, e.g. a 32-byte
                    ``vfio_iommu_type1_dma_map`` passed to UNMAP_DMA (24).  Sizes older headers
                    used are fine (``vfio_device_info`` 16/20, ``vfio_iommu_type1_info``
                    16/20), and so is room for output (capability chains).
``padding``         PAMU handlers: a non-zero ``__pad`` in an input struct
                    (``vfio_pamu_attr``, ``vfio_pamu_msi_bank_map``).
``misaligned``      Type1 and PAMU MAP/UNMAP (and DIRTY_PAGES, MAP_MSI_BANK), on the line
                    that answers EINVAL for it: which field, its value, the alignment.
``dma_fault``       vfio-pci (kernel/pci/core.py), through the machine's fault hook: a DMA
                    or MSI write that faulted while a VFIO client had the device open.
``irq_leak``        vfio-pci ``close_device``: the last device fd closed with interrupt
                    eventfds still registered (the kernel tears them down; the client most
                    likely forgot SET_IRQS DATA_NONE count 0).
``eventfd_closed``  vfio-pci ``close_device``: a registered eventfd that the client itself
                    had already closed, so its interrupts went nowhere.
``msi_unmapped``    PAMU auto mode: the last DMA mapping removed while MSI is enabled: the
                    bank windows go, later MSIs fault (SPEC §6.7.1, §9.1) [decision D3].
==================  ===========================================================================
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vfiosim.uapi import vfio as V
from vfiosim.uapi import vfio_pamu as P

if TYPE_CHECKING:
    from vfiosim.machine import Machine

ARGSZ = "argsz"
PADDING = "padding"
MISALIGNED = "misaligned"
DMA_FAULT = "dma_fault"
IRQ_LEAK = "irq_leak"
EVENTFD_CLOSED = "eventfd_closed"
MSI_UNMAPPED = "msi_unmapped"

#: Every kind, with one line saying what it means (the table above, for ``help`` and dumps).
KINDS: dict[str, str] = {
    ARGSZ: "argsz is no size of the ioctl's struct (the wrong struct?)",
    PADDING: "non-zero padding in an input struct",
    MISALIGNED: "a field the call requires aligned is not (the EINVAL's reason)",
    DMA_FAULT: "a device DMA faulted while a VFIO client had the device open",
    IRQ_LEAK: "device closed with interrupt eventfds still registered",
    EVENTFD_CLOSED: "an eventfd was closed by the client while still registered",
    MSI_UNMAPPED: "PAMU: last DMA mapping removed while MSI is enabled",
}


@dataclass(frozen=True, slots=True)
class SanitizerReport:
    """One client bug: a stable ``kind`` (a key of :data:`KINDS`), a sentence for people,
    and the facts as a dict (field names, values, device names) for programs."""

    kind: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)
    time_ns: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "detail": dict(self.detail),
                "time_ns": self.time_ns}


# ---------------------------------------------------------------------------------------------
# argsz

#: The ioctl argument structs, to name what a wrong ``argsz`` may have been meant for.
ARG_STRUCTS: tuple[type[ctypes.Structure], ...] = (
    V.vfio_group_status, V.vfio_device_info, V.vfio_region_info, V.vfio_irq_info,
    V.vfio_irq_set, V.vfio_iommu_type1_info, V.vfio_iommu_type1_dma_map,
    V.vfio_iommu_type1_dma_unmap, V.vfio_iommu_type1_dirty_bitmap, V.vfio_pci_hot_reset_info,
    V.vfio_pci_hot_reset, P.vfio_pamu_attr, P.vfio_pamu_msi_bank_map,
    P.vfio_pamu_msi_bank_unmap,
)


def structs_of_size(size: int, exclude: str = "") -> list[str]:
    """Names of the ioctl argument structs ``size`` bytes long, other than ``exclude``."""
    return [s.__name__ for s in ARG_STRUCTS
            if ctypes.sizeof(s) == size and s.__name__ != exclude]


def check_argsz(machine: Machine, ioctl: str, struct: str, argsz: int, sizes: Sequence[int],
                room: bool = False) -> None:
    """Report an ``argsz`` that is none of ``sizes``.

    ``sizes`` are the sizes the argument has had in some header (with its variable part, if
    the call has one).  ``room``: the call writes output into bytes past the struct
    (capability chains), so any ``argsz`` above the largest size is fine.  Call it after the
    handler's own ``argsz < minsz`` check passed.
    """
    if argsz in sizes or (room and argsz > max(sizes)):
        return
    others = structs_of_size(argsz, struct)
    expected = sorted(set(sizes))
    msg = (f"{ioctl}: argsz {argsz} is not a size of struct {struct} "
           f"({' or '.join(map(str, expected))})")
    if argsz > max(sizes):
        msg += "; the bytes past the struct are never read"
    if others:
        msg += f"; {argsz} is sizeof(struct {' / '.join(others)}): the wrong struct?"
    machine.report(ARGSZ, msg, ioctl=ioctl, struct=struct, argsz=argsz, expected=expected,
                   same_size_as=others)


# ---------------------------------------------------------------------------------------------
# padding


def check_padding(machine: Machine, ioctl: str, obj: ctypes.Structure,
                  fields: Sequence[str]) -> None:
    """Report each named padding field of the input struct ``obj`` that is not zero (the
    handler read it: it lies inside ``minsz``)."""
    cls = type(obj)
    for name in fields:
        value = getattr(obj, name)
        if value:
            off = V.offsetof(cls, name)
            machine.report(
                PADDING,
                f"{ioctl}: struct {cls.__name__}.{name} (offset {off}) is {value:#x}, not 0; "
                "the kernel ignores it, but a client that leaves it unset may be passing "
                "uninitialised memory or the wrong struct",
                ioctl=ioctl, struct=cls.__name__, field=name, offset=off, value=value)


# ---------------------------------------------------------------------------------------------
# alignment


def report_misaligned(machine: Machine, ioctl: str, alignment: int, what: str,
                      fields: dict[str, int], **extra: Any) -> None:
    """On the line that answers EINVAL for misalignment: report each of ``fields`` (name ->
    value) that is not a multiple of ``alignment``.  ``what`` names the alignment ("the IOMMU
    page size", "the window size"); ``extra`` goes into the detail as it is."""
    for name, value in fields.items():
        if value % alignment:
            machine.report(
                MISALIGNED,
                f"{ioctl}: {name} {value:#x} is not aligned to {what} {alignment:#x} "
                f"(off by {value % alignment:#x}); the call fails with EINVAL",
                ioctl=ioctl, field=name, value=value, alignment=alignment, **extra)


__all__ = [
    "ARGSZ", "ARG_STRUCTS", "DMA_FAULT", "EVENTFD_CLOSED", "IRQ_LEAK", "KINDS", "MISALIGNED",
    "MSI_UNMAPPED", "PADDING", "SanitizerReport", "check_argsz", "check_padding",
    "report_misaligned", "structs_of_size",
]
