"""The x86 MSI doorbell window and its MSI "controller" (SPEC §9.2, Appendix A #21).

Hardware constraints, before the code:

* The interrupt window is 0xFEE0_0000–0xFEEF_FFFF (1 MiB). With interrupt remapping a device
  write there is an interrupt request, not memory: the IOMMU passes it untranslated
  (hw/iommu.py) and it lands here on the physical bus.
* The model programs every vector with address 0xFEE0_0000 and data = a per-vector handle
  (the remapping-table index of a remappable-format MSI). A 4-byte write of ``d`` anywhere in
  the window fires the vector whose handle is ``d``.
* A write of another size, a write of an unknown handle, and any read are logged and have no
  other effect (a read returns all-ones, as an unbacked address does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vfiosim.hw.irq import MsiVector

X86_MSI_BASE = 0xFEE0_0000
X86_MSI_SIZE = 0x10_0000
FIRST_HANDLE = 0x20  # IRTE indices below are left free so that data 0 is never a vector


class X86Msi:
    """``machine.msi`` on x86: ``alloc() -> MsiVector``, ``free(vec)``, ``set_handler``."""

    def __init__(self, machine: Any, base: int = X86_MSI_BASE) -> None:
        self.machine = machine
        self.base = base
        self._by_handle: dict[int, MsiVector] = {}
        self._free_handles: list[int] = []
        self._next_handle = FIRST_HANDLE
        self._handlers: dict[int, Callable[[], None] | None] = {}  # handle -> handler
        self.delivered = 0
        machine.bus.add_mmio(base, X86_MSI_SIZE, self)

    # -- allocation ------------------------------------------------------------------------

    def alloc(self) -> MsiVector | None:
        if self._free_handles:
            self._free_handles.sort()
            handle = self._free_handles.pop(0)
        else:
            handle = self._next_handle
            self._next_handle += 1
        vec = MsiVector(address=self.base, data=handle, irq=0)
        self._handlers[handle] = None
        vec.irq = self.machine.irq.request(lambda h=handle: self._dispatch(h))
        self._by_handle[handle] = vec
        return vec

    def free(self, vec: MsiVector) -> None:
        if self._by_handle.get(vec.data) is not vec:
            self.machine.log(f"x86 msi: free of unknown vector data 0x{vec.data:x}")
            return
        del self._by_handle[vec.data]
        del self._handlers[vec.data]
        self.machine.irq.free(vec.irq)
        self._free_handles.append(vec.data)

    def set_handler(self, vec: MsiVector, fn: Callable[[], None] | None) -> None:
        """Called (no arguments, machine lock held) each time ``vec`` fires."""
        if self._by_handle.get(vec.data) is not vec:
            raise KeyError(f"MSI vector with data 0x{vec.data:x} is not allocated")
        self._handlers[vec.data] = fn

    def vectors(self) -> list[MsiVector]:
        return list(self._by_handle.values())

    def _dispatch(self, handle: int) -> None:
        fn = self._handlers.get(handle)
        if fn is None:
            self.machine.log(f"x86 msi: vector 0x{handle:x} fired with no handler (spurious)")
            return
        fn()

    # -- the doorbell window (MMIO region) --------------------------------------------------

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if size != 4:
            self.machine.log(
                f"x86 msi: {size}-byte write to 0xfee{offset:05x} is not an interrupt; dropped"
            )
            return
        vec = self._by_handle.get(value)
        if vec is None:
            self.machine.irq.spurious += 1
            self.machine.log(f"x86 msi: message data 0x{value:x} names no vector (spurious)")
            return
        self.delivered += 1
        self.machine.irq.fire(vec.irq)

    def mmio_read(self, offset: int, size: int) -> int:
        self.machine.log(f"x86 msi: read of the interrupt window at +0x{offset:x} returns ones")
        return (1 << (8 * size)) - 1
