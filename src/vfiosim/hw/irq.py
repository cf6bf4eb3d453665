"""Host interrupt numbers and their handlers, and the MSI vector record.

``IrqDomain`` plays the part of the host's interrupt controller as the kernel sees it: MSI
controllers (hw/x86_msi.py, hw/fsl_msi.py) and INTx routing ``request`` an irq number with a
handler and ``fire`` it when the hardware signals. Handlers are called with no arguments,
with the machine lock held (whoever fires holds it). A fired irq without a handler is
spurious: logged through ``machine.log`` and counted (SPEC §8.4, Appendix A #20).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

IrqHandler = Callable[[], None]

FIRST_IRQ = 32  # numbers below are left out so that 0 never looks like a valid irq


@dataclass
class MsiVector:
    """One MSI message an MSI controller handed out (docs/architecture.md §6).

    ``address``: the physical doorbell the device writes; ``data``: the 32-bit message data;
    ``irq``: the host irq the message fires. hw/fsl_msi.py mirrors these three field names
    and adds its own (bank, hwirq).
    """

    address: int
    data: int
    irq: int


class IrqDomain:
    """Host irq numbers: ``request(handler) -> int``, ``free(n)``, ``fire(n)``."""

    def __init__(self, machine: Any) -> None:
        self.machine = machine
        self._handlers: dict[int, IrqHandler | None] = {}
        self._free: list[int] = []
        self._next = FIRST_IRQ
        self.fired: dict[int, int] = {}  # irq -> times fired with a handler
        self.spurious = 0

    def request(self, handler: IrqHandler | None = None) -> int:
        """Allocate an irq number (lowest freed one first) and attach ``handler``."""
        if self._free:
            self._free.sort()
            n = self._free.pop(0)
        else:
            n = self._next
            self._next += 1
        self._handlers[n] = handler
        return n

    def set_handler(self, n: int, handler: IrqHandler | None) -> None:
        if n not in self._handlers:
            raise KeyError(f"irq {n} is not allocated")
        self._handlers[n] = handler

    def free(self, n: int) -> None:
        if self._handlers.pop(n, _MISSING) is _MISSING:
            self.machine.log(f"irq: free of unallocated irq {n}")
            return
        self.fired.pop(n, None)
        self._free.append(n)

    def allocated(self, n: int) -> bool:
        return n in self._handlers

    def fire(self, n: int) -> bool:
        """Signal irq ``n``. Returns True if a handler ran; otherwise logs it as spurious."""
        handler = self._handlers.get(n)
        if handler is None:
            self.spurious += 1
            state = "no handler" if n in self._handlers else "not allocated"
            self.machine.log(f"irq: spurious interrupt {n} ({state})")
            return False
        self.fired[n] = self.fired.get(n, 0) + 1
        handler()
        return True


_MISSING = object()
