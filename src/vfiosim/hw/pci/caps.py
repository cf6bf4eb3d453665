"""PCI capabilities a simulated function can carry: PM, MSI, PCI Express, MSI-X.

Framing is written once: :meth:`PciCap.read_register` puts the capability ID and the next
pointer into dword 0, and :meth:`PciCap.write_register` keeps them read-only, so each
capability below only decodes its own registers in ``_read_register(reg)`` /
``_write_register(reg, data, byte_enable)`` (``reg`` = dword index within the capability).
Each class draws its layouts (dword index, byte offset) in its docstring, directly above the
code that decodes them. Writes go through :func:`byte_mask_update`.

A capability that acts on the function (MSI-X unmask delivers a pending message, FLR and
D3hot→D0 reset the function) calls back through ``self.function``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vfiosim.hw.pci.util import byte_mask_update, w1c_update
from vfiosim.uapi.pci_regs import (
    PCI_CAP_MSIX_SIZEOF,
    PCI_EXP_DEVCAP_FLR,
    PCI_EXP_DEVCTL_BCR_FLR,
    PCI_EXP_TYPE_ENDPOINT,
    PCI_MSI_FLAGS_64BIT,
    PCI_MSI_FLAGS_ENABLE,
    PCI_MSI_FLAGS_MASKBIT,
    PCI_MSI_FLAGS_QSIZE,
    PCI_MSIX_ENTRY_CTRL_MASKBIT,
    PCI_MSIX_ENTRY_SIZE,
    PCI_MSIX_FLAGS_ENABLE,
    PCI_MSIX_FLAGS_MASKALL,
    PCI_PM_CTRL_NO_SOFT_RESET,
    PCI_PM_CTRL_STATE_MASK,
    PCI_PM_SIZEOF,
    PciCapId,
)

if TYPE_CHECKING:
    from vfiosim.hw.pci.function import PciFunction

D0, D3HOT = 0, 3


class PciCap:
    """Common framing of a capability (PCI 3.0, 6.7)::

        dword  byte   31                    16 15          8 7           0
          0    0x00  | capability-specific      | Next Pointer | Cap ID      |
          1..  0x04  | capability-specific registers ...                     |

    ``offset`` and ``next`` are set when the function links the capability into its list.
    ``length`` is the size in bytes; bytes of a dword past ``length`` belong to the function.
    """

    cap_id: int = 0
    length: int = 4

    def __init__(self) -> None:
        self.offset = 0
        self.next = 0
        self.function: PciFunction | None = None

    def read_register(self, reg: int) -> int:
        val = self._read_register(reg) & 0xFFFF_FFFF
        if reg == 0:
            val = (val & 0xFFFF_0000) | (self.next << 8) | int(self.cap_id)
        return val

    def write_register(self, reg: int, data: int, byte_enable: int) -> None:
        if reg == 0:
            byte_enable &= 0b1100  # Cap ID and Next Pointer are read-only
        if byte_enable:
            self._write_register(reg, data, byte_enable)

    def _read_register(self, reg: int) -> int:
        return 0

    def _write_register(self, reg: int, data: int, byte_enable: int) -> None:
        pass

    def reset(self) -> None:
        """Back to power-on values."""


class PmCapability(PciCap):
    """Power Management capability (PCI Bus Power Management Interface Spec 1.2, 3.2)::

        dword  byte   31          24 23         16 15            8 7             0
          0    0x00  |  PM Capabilities (PMC)      | Next Pointer   | Cap ID (01h)  |
          1    0x04  | Data        | PMCSR_BSE    |  PM Control/Status (PMCSR)     |

    PMC: version 3 (PM 1.2), no D1/D2, no PME. PMCSR: PowerState (bits 1:0) is writable with
    D0 or D3hot (a write of an unsupported state is ignored); No_Soft_Reset (bit 3) is 0, so
    a D3hot→D0 transition resets the function (PM 1.2, 5.4.1).
    """

    cap_id = PciCapId.PM
    length = PCI_PM_SIZEOF
    PMC = 0x0003
    no_soft_reset = False  # PMCSR No_Soft_Reset: D3hot -> D0 resets the function

    def __init__(self) -> None:
        super().__init__()
        self.power_state = D0

    def _read_register(self, reg: int) -> int:
        if reg == 0:
            return self.PMC << 16
        if reg == 1:
            nsr = PCI_PM_CTRL_NO_SOFT_RESET if self.no_soft_reset else 0
            return (self.power_state & PCI_PM_CTRL_STATE_MASK) | nsr
        return 0

    def _write_register(self, reg: int, data: int, byte_enable: int) -> None:
        if reg != 1 or not byte_enable & 1:
            return
        state = data & PCI_PM_CTRL_STATE_MASK
        if state not in (D0, D3HOT):
            return
        old, self.power_state = self.power_state, state
        if old == D3HOT and state == D0 and not self.no_soft_reset:
            assert self.function is not None
            self.function.reset()  # resets this capability too: power_state is D0

    def reset(self) -> None:
        self.power_state = D0


class MsiCapability(PciCap):
    """MSI capability (PCI Local Bus Spec 3.0, 6.8.1). Four layouts::

        32-bit address, no per-vector masking (10 bytes)
        dword  byte   31                    16 15          8 7           0
          0    0x00  | Message Control          | Next Pointer | Cap ID 05h  |
          1    0x04  | Message Address                                      |
          2    0x08  | (function's bytes)       | Message Data              |

        64-bit address, no per-vector masking (14 bytes)  -- edu
          0    0x00  | Message Control          | Next Pointer | Cap ID 05h  |
          1    0x04  | Message Address (low)                                |
          2    0x08  | Message Upper Address                                |
          3    0x0c  | (function's bytes)       | Message Data              |

        32-bit address, per-vector masking (20 bytes)
          0    0x00  | Message Control          | Next Pointer | Cap ID 05h  |
          1    0x04  | Message Address                                      |
          2    0x08  | Reserved                 | Message Data              |
          3    0x0c  | Mask Bits                                            |
          4    0x10  | Pending Bits                                         |

        64-bit address, per-vector masking (24 bytes)
          0    0x00  | Message Control          | Next Pointer | Cap ID 05h  |
          1    0x04  | Message Address (low)                                |
          2    0x08  | Message Upper Address                                |
          3    0x0c  | Reserved                 | Message Data              |
          4    0x10  | Mask Bits                                            |
          5    0x14  | Pending Bits                                         |

    Message Control: bit 0 Enable (RW), bits 3:1 Multiple Message Capable (RO), bits 6:4
    Multiple Message Enable (RW), bit 7 64-bit capable (RO), bit 8 per-vector masking (RO).
    Vector k of an MME of 2^m vectors sends Message Data with its low m bits replaced by k.
    The low two address bits are reserved (read 0).
    """

    cap_id = PciCapId.MSI

    def __init__(self, vectors: int = 1, is64: bool = True, masking: bool = False) -> None:
        super().__init__()
        if vectors not in (1, 2, 4, 8, 16, 32):
            raise ValueError("MSI vector count must be a power of two up to 32")
        self.vectors = vectors
        self.is64 = is64
        self.masking = masking
        self.length = (24 if is64 else 20) if masking else (14 if is64 else 10)
        self.reset()

    def reset(self) -> None:
        self.enable = False
        self.mme = 0  # log2 of enabled vectors
        self.address = 0
        self.data = 0
        self.mask = 0
        self.pending = 0

    @property
    def control(self) -> int:
        mmc = self.vectors.bit_length() - 1
        val = (mmc << 1) | (self.mme << 4)
        if self.enable:
            val |= PCI_MSI_FLAGS_ENABLE
        if self.is64:
            val |= PCI_MSI_FLAGS_64BIT
        if self.masking:
            val |= PCI_MSI_FLAGS_MASKBIT
        return val

    def _layout(self) -> dict[int, str]:
        regs = {0: "control", 1: "addr_lo"}
        r = 2
        if self.is64:
            regs[r] = "addr_hi"
            r += 1
        regs[r] = "data"
        if self.masking:
            regs[r + 1] = "mask"
            regs[r + 2] = "pending"
        return regs

    def _read_register(self, reg: int) -> int:
        name = self._layout().get(reg)
        if name == "control":
            return self.control << 16
        if name == "addr_lo":
            return self.address & 0xFFFF_FFFC
        if name == "addr_hi":
            return self.address >> 32
        if name == "data":
            return self.data & 0xFFFF
        if name == "mask":
            return self.mask
        if name == "pending":
            return self.pending
        return 0

    def _write_register(self, reg: int, data: int, byte_enable: int) -> None:
        name = self._layout().get(reg)
        if name == "control":
            ctl = byte_mask_update(self.control << 16, byte_enable, data, 0x0071_0000) >> 16
            self.enable = bool(ctl & PCI_MSI_FLAGS_ENABLE)
            self.mme = (ctl & PCI_MSI_FLAGS_QSIZE) >> 4
        elif name == "addr_lo":
            lo = byte_mask_update(self.address & 0xFFFF_FFFF, byte_enable, data, 0xFFFF_FFFC)
            self.address = (self.address & ~0xFFFF_FFFF) | lo
        elif name == "addr_hi":
            hi = byte_mask_update(self.address >> 32, byte_enable, data)
            self.address = (hi << 32) | (self.address & 0xFFFF_FFFF)
        elif name == "data":
            self.data = byte_mask_update(self.data, byte_enable, data, 0xFFFF)
        elif name == "mask":
            old = self.mask
            self.mask = byte_mask_update(self.mask, byte_enable, data, (1 << self.vectors) - 1)
            unmasked = old & ~self.mask & self.pending
            for k in range(self.vectors):
                if unmasked >> k & 1 and self.function is not None:
                    self.pending &= ~(1 << k)
                    self.function.send_msi(k)

    def set_mask(self, vector: int, masked: bool) -> None:
        """Per-vector mask (masking-capable layouts): clearing it sends a pending message."""
        if not self.masking:
            return
        bit = 1 << vector
        new = self.mask | bit if masked else self.mask & ~bit
        self._write_register(self._mask_reg(), new, 0xF)

    def _mask_reg(self) -> int:
        return 4 if self.is64 else 3

    @property
    def enabled_vectors(self) -> int:
        return min(1 << self.mme, self.vectors) if self.enable else 0

    def message(self, vector: int) -> tuple[int, int]:
        """(address, data) vector ``vector`` sends."""
        n = 1 << self.mme
        return self.address, (self.data & ~(n - 1) & 0xFFFF) | vector


class PcieCapability(PciCap):
    """PCI Express capability, version 2, endpoint (PCIe Base Spec 4.0, 7.5.3)::

        dword  byte   31                    16 15                              0
          0    0x00  | PCI Express Capabilities | Next Pointer   | Cap ID 10h  |
          1    0x04  | Device Capabilities                                     |
          2    0x08  | Device Status            | Device Control               |
          3    0x0c  | Link Capabilities                                       |
          4    0x10  | Link Status              | Link Control                 |
          5    0x14  | Slot Capabilities (0: no slot)                          |
          6    0x18  | Slot Status              | Slot Control                 |
          7    0x1c  | Root Capabilities        | Root Control                 |
          8    0x20  | Root Status                                             |
          9    0x24  | Device Capabilities 2                                   |
         10    0x28  | Device Status 2          | Device Control 2             |
         11    0x2c  | Link Capabilities 2                                     |
         12    0x30  | Link Status 2            | Link Control 2               |
         13    0x34  | Slot Capabilities 2                                     |
         14    0x38  | Slot Status 2            | Slot Control 2               |

    The model: an endpoint with a link, Max_Payload_Size 256 B, FLR capable
    (``PCI_EXP_DEVCAP_FLR``); link 8 GT/s x4, trained. Device Control and Link Control keep
    the writable bits the spec defines; writing Initiate FLR (bit 15 of Device Control)
    resets the function and reads back 0. Device Status error bits are RW1C. Slot and root
    registers are reserved for an endpoint (0). The structure is 0x3C bytes in hardware;
    vfio-pci sizes it with ``PCI_CAP_EXP_ENDPOINT_SIZEOF_V2`` (0x32 in 6.18, see
    uapi/pci_regs.py), which is the kernel's business.
    """

    cap_id = PciCapId.EXP
    length = 0x3C  # version 2: through Slot Status 2
    # Register values, writable bits and RW1C bits, per dword: (value, wmask, w1cmask)
    _FLAGS = 0x2 | (PCI_EXP_TYPE_ENDPOINT << 4)
    _DEVCAP = 0x1 | PCI_EXP_DEVCAP_FLR  # 256 B payload
    _LNKCAP = 0x3 | (4 << 4)  # 8 GT/s, x4
    _LNKSTA = 0x3 | (4 << 4)  # current speed/width
    _DEVCTL_WMASK = 0x7CFF | PCI_EXP_DEVCTL_BCR_FLR  # errors, relaxed ordering, MPS, MRRS...
    _DEVSTA_W1C = 0x000F
    _LNKCTL_WMASK = 0x0FFB
    _DEVCAP2 = 0
    _DEVCTL2_WMASK = 0x041F  # completion timeout, ID-based ordering-free bits kept simple

    def __init__(self) -> None:
        super().__init__()
        self.reset()

    def reset(self) -> None:
        self.regs = [0] * 15
        self.regs[0] = self._FLAGS << 16
        self.regs[1] = self._DEVCAP
        self.regs[2] = 0x2810  # DEVCTL: relaxed ordering, no-snoop, MRRS 512 B (spec default)
        self.regs[3] = self._LNKCAP
        self.regs[4] = self._LNKSTA << 16
        self.regs[9] = self._DEVCAP2

    def _read_register(self, reg: int) -> int:
        return self.regs[reg] if 0 <= reg < len(self.regs) else 0

    def _write_register(self, reg: int, data: int, byte_enable: int) -> None:
        if reg == 2:  # Device Control | Device Status
            old = self.regs[2]
            new = byte_mask_update(old, byte_enable, data, self._DEVCTL_WMASK)
            new = w1c_update(new, byte_enable, data, self._DEVSTA_W1C << 16)
            flr = new & PCI_EXP_DEVCTL_BCR_FLR
            self.regs[2] = new & ~PCI_EXP_DEVCTL_BCR_FLR
            if flr and self.function is not None:
                self.function.reset()  # Function Level Reset (this capability included)
        elif reg == 4:
            self.regs[4] = byte_mask_update(self.regs[4], byte_enable, data, self._LNKCTL_WMASK)
        elif reg == 10:
            self.regs[10] = byte_mask_update(
                self.regs[10], byte_enable, data, self._DEVCTL2_WMASK
            )


class MsixCapability(PciCap):
    """MSI-X capability (PCI Local Bus Spec 3.0, 6.8.2)::

        dword  byte   31                    16 15          8 7           0
          0    0x00  | Message Control          | Next Pointer | Cap ID 11h  |
          1    0x04  | Table Offset                                 | BIR  |
          2    0x08  | PBA Offset                                   | BIR  |

        Message Control: bits 10:0 Table Size - 1 (RO), bit 14 Function Mask, bit 15 Enable.

    The table and the PBA live in a BAR (``table_bar`` at ``table_offset``, ``pba_bar`` at
    ``pba_offset``). Table entry i at ``table_offset + 16 * i``::

        dword  byte   31                                                   0
          0    0x00  | Message Address (bits 1:0 reserved, 0)               |
          1    0x04  | Message Upper Address                                |
          2    0x08  | Message Data                                         |
          3    0x0c  | Vector Control (bit 0 Mask, power-on 1; rest RO 0)   |

    PBA: bit i of QWORD i // 64 is set while vector i is pending (RO). A message raised while
    its vector or the whole function is masked sets the pending bit; clearing the mask later
    sends it and clears the bit.
    """

    cap_id = PciCapId.MSIX
    length = PCI_CAP_MSIX_SIZEOF

    def __init__(
        self, vectors: int, table_bar: int, table_offset: int, pba_bar: int, pba_offset: int
    ) -> None:
        super().__init__()
        if not 1 <= vectors <= 2048:
            raise ValueError("MSI-X table size must be 1..2048")
        if table_offset % 8 or pba_offset % 8:
            raise ValueError("MSI-X table and PBA offsets are QWORD aligned")
        self.vectors = vectors
        self.table_bar = table_bar
        self.table_offset = table_offset
        self.pba_bar = pba_bar
        self.pba_offset = pba_offset
        self.table_size = vectors * PCI_MSIX_ENTRY_SIZE
        self.pba_size = (vectors + 63) // 64 * 8
        self.reset()

    def reset(self) -> None:
        self.enable = False
        self.function_mask = False
        self.entries = [[0, 0, 0, PCI_MSIX_ENTRY_CTRL_MASKBIT] for _ in range(self.vectors)]
        self.pba = 0

    @property
    def control(self) -> int:
        val = self.vectors - 1
        if self.function_mask:
            val |= PCI_MSIX_FLAGS_MASKALL
        if self.enable:
            val |= PCI_MSIX_FLAGS_ENABLE
        return val

    def _read_register(self, reg: int) -> int:
        if reg == 0:
            return self.control << 16
        if reg == 1:
            return self.table_offset | self.table_bar
        if reg == 2:
            return self.pba_offset | self.pba_bar
        return 0

    def _write_register(self, reg: int, data: int, byte_enable: int) -> None:
        if reg != 0:
            return
        ctl = byte_mask_update(self.control << 16, byte_enable, data, 0xC000_0000) >> 16
        self.enable = bool(ctl & PCI_MSIX_FLAGS_ENABLE)
        self.function_mask = bool(ctl & PCI_MSIX_FLAGS_MASKALL)
        self._deliver_unmasked()

    # -- table and PBA in the BAR --------------------------------------------------------

    def masked(self, vector: int) -> bool:
        return self.function_mask or bool(self.entries[vector][3] & PCI_MSIX_ENTRY_CTRL_MASKBIT)

    def message(self, vector: int) -> tuple[int, int]:
        lo, hi, data, _ = self.entries[vector]
        return (hi << 32) | lo, data

    def in_table(self, bar: int, offset: int) -> bool:
        return bar == self.table_bar and 0 <= offset - self.table_offset < self.table_size

    def in_pba(self, bar: int, offset: int) -> bool:
        return bar == self.pba_bar and 0 <= offset - self.pba_offset < self.pba_size

    def table_read(self, offset: int, size: int) -> int:
        """Read ``size`` bytes (4 or 8, naturally aligned) at table offset ``offset``."""
        val = 0
        for i in range(0, size, 4):
            o = offset + i
            e, d = divmod(o, PCI_MSIX_ENTRY_SIZE)
            val |= self.entries[e][d // 4] << (8 * i)
        return val

    def table_write(self, offset: int, size: int, value: int) -> None:
        for i in range(0, size, 4):
            o = offset + i
            e, d = divmod(o, PCI_MSIX_ENTRY_SIZE)
            word = (value >> (8 * i)) & 0xFFFF_FFFF
            reg = d // 4
            wmask = (0xFFFF_FFFC, 0xFFFF_FFFF, 0xFFFF_FFFF, PCI_MSIX_ENTRY_CTRL_MASKBIT)[reg]
            self.entries[e][reg] = byte_mask_update(self.entries[e][reg], 0xF, word, wmask)
        self._deliver_unmasked()

    def pba_read(self, offset: int, size: int) -> int:
        return (self.pba >> (8 * offset)) & ((1 << (8 * size)) - 1)

    def set_mask(self, vector: int, masked: bool) -> None:
        ctrl = self.entries[vector][3]
        if masked:
            self.entries[vector][3] = ctrl | PCI_MSIX_ENTRY_CTRL_MASKBIT
        else:
            self.entries[vector][3] = ctrl & ~PCI_MSIX_ENTRY_CTRL_MASKBIT
            self._deliver_unmasked()

    def _deliver_unmasked(self) -> None:
        if not self.enable or self.function_mask or not self.pba:
            return
        for k in range(self.vectors):
            if self.pba >> k & 1 and not self.masked(k):
                self.pba &= ~(1 << k)
                if self.function is not None:
                    self.function.send_msi(k)
