"""Base Address Registers: what a BAR is and how its config dword decodes.

PCI Local Bus Spec 3.0, 6.2.5.1 (Address Maps). A memory BAR's low four bits are read-only
flags; the address bits below the BAR's size are read-only zero, so writing all-ones and
reading back gives the size mask (``~(size - 1)`` with the flags)::

    Memory BAR (one dword, or two for a 64-bit BAR: BARn low, BARn+1 high)

      31                                          4    3     2   1    0
     +---------------------------------------------+------+--------+----+
     |        base address (bits >= log2(size))    | pref |  type  | 0  |
     +---------------------------------------------+------+--------+----+
       type: 00 = 32-bit, 10 = 64-bit; pref: prefetchable; bit 0: 0 = memory space

    I/O BAR
      31                                                      2    1    0
     +----------------------------------------------------------+----+----+
     |                      base address                        | 0  | 1  |
     +----------------------------------------------------------+----+----+
"""

from __future__ import annotations

from dataclasses import dataclass

from vfiosim.uapi.pci_regs import (
    PCI_BASE_ADDRESS_MEM_PREFETCH,
    PCI_BASE_ADDRESS_MEM_TYPE_64,
    PCI_BASE_ADDRESS_SPACE_IO,
)


@dataclass
class Bar:
    """One BAR of a function (docs/architecture.md §6): ``size`` 0 means not implemented."""

    size: int = 0
    mem: bool = True
    is64: bool = False
    prefetch: bool = False

    def __post_init__(self) -> None:
        if self.size and self.size & (self.size - 1):
            raise ValueError(f"BAR size 0x{self.size:x} is not a power of two")
        if self.size and self.mem and self.size < 16:
            raise ValueError("a memory BAR is at least 16 bytes")

    @property
    def implemented(self) -> bool:
        return self.size != 0

    def flags(self) -> int:
        """The read-only low bits of the BAR's (low) dword."""
        if not self.size:
            return 0
        if not self.mem:
            return PCI_BASE_ADDRESS_SPACE_IO
        flags = 0
        if self.is64:
            flags |= PCI_BASE_ADDRESS_MEM_TYPE_64
        if self.prefetch:
            flags |= PCI_BASE_ADDRESS_MEM_PREFETCH
        return flags

    def wmask(self) -> int:
        """Writable bits of the BAR as one 64-bit (or 32-bit) value: the address bits."""
        if not self.size:
            return 0
        width = 64 if self.is64 else 32
        return ((1 << width) - 1) & ~(self.size - 1) & ~(0xF if self.mem else 0x3)
