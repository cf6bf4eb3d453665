"""Freescale MSI controller: MSI banks, their MSIR registers and message registers.

Models arch/powerpc/sysdev/fsl_msi.c and fsl_msi.h, with the per-bank allocator of
arch/powerpc/sysdev/msi_bitmap.c and the SDK's region helpers
(``fsl_msi_get_region_count``, ``fsl_msi_get_region``).  SPEC §8, §9.1.

Hardware constraints (SPEC §8.1, §8.2)
--------------------------------------
* A bank has ``NR_MSI_REG`` shared-interrupt registers (MSIR), 32 interrupt bits each:
  8 MSIR / 256 hwirqs for MSIIR banks (``fsl,mpic-msi``, p4080), 16 MSIR / 512 hwirqs for
  MSIIR1 banks (``fsl,mpic-msi-v4.3``, t4240).  Each MSIR has its own cascade interrupt.
* An MSI is a 32-bit write of the message data to the bank's message register (MSIIR or
  MSIIR1), which sits alone on its own 4 KiB alias page (CCSR + 0x44000 + 0x1000·i), so a
  windowed IOMMU can map one bank per window.
* hwirq = ``(reg << SRS) | (bit << IBS)`` and the message data is the hwirq:

  =======  ===  ===  =====================  ==============================================
  type     SRS  IBS  data                   decode of a write of ``d`` (higher bits ignored)
  =======  ===  ===  =====================  ==============================================
  MSIIR     5    0   32·reg + bit (0-255)   reg = (d >> 5) & 7,  bit = d & 31
  MSIIR1    0    4   (bit << 4) | reg       reg = d & 15,        bit = (d >> 4) & 31
  =======  ===  ===  =====================  ==============================================

* Receive path: the write sets bit ``bit`` of MSIR ``reg``; the MSIR's cascade interrupt
  fires; its handler reads the MSIR (reading clears it) and dispatches each set bit, lowest
  first, as its hwirq.  Allocation: the first bank in probe order with a free hwirq, the
  lowest free hwirq in it.

Not modelled (SPEC §8.2, Appendix A #19): the MPIC v2.0 PIC1 erratum (byte-swapped data),
``msi-available-ranges``, the ``fsl,msi`` phandle, MSISR.

Interface (docs/architecture.md §6, ``machine.msi``): :meth:`FslMsi.alloc`,
:meth:`FslMsi.free`, :meth:`FslMsi.set_handler`, :meth:`FslMsi.bank_count`,
:meth:`FslMsi.get_region`, :meth:`FslMsi.region_count`, :meth:`FslMsi.attach`,
:meth:`FslMsi.dump`.  Each allocated hwirq is mapped to a host irq of ``machine.irq`` (the
kernel's ``irq_create_mapping``); ``vec.irq`` is that number and a handler registered with
``set_handler`` (e.g. an eventfd's ``signal``) runs when the hwirq is dispatched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from vfiosim.hw.irq import MsiVector as _MsiVectorBase

if TYPE_CHECKING:
    from vfiosim.machine import Machine

# fsl_msi.h
NR_MSI_REG_MSIIR = 8  # MSIIR can index 8 MSI registers
NR_MSI_REG_MSIIR1 = 16  # MSIIR1 can index 16 MSI registers
NR_MSI_REG_MAX = NR_MSI_REG_MSIIR1
IRQS_PER_MSI_REG = 32
NR_MSI_IRQS_MAX = NR_MSI_REG_MAX * IRQS_PER_MSI_REG

# fsl_msi.c.  v3.11–v5.12 have one ``MSI_SRS_MASK`` (0xf, used only to print a hwirq); the
# per-type masks are the spelling of later trees and the register widths of SPEC §8.2 (8 or 16
# MSIRs), which is what the bank decodes a write with.
MSIIR_OFFSET_MASK = 0xFFFFF
MSIIR_IBS_SHIFT = 0
MSIIR_SRS_SHIFT = 5
MSIIR_SRS_MASK = 0x7
MSIIR1_IBS_SHIFT = 4
MSIIR1_SRS_SHIFT = 0
MSIIR1_SRS_MASK = 0xF
MSI_IBS_MASK = 0x1F
MSI_MPIC_SIZE = 0x10  # stride of the MSIR registers in a bank block

# CCSR layout of the banks (qoriq-mpic.dtsi, qoriq-mpic4.3.dtsi; SPEC §2.1, §8.1)
FSL_MSI_BANK_BLOCK = 0x41600  # bank i register block: + FSL_MSI_BANK_STRIDE * i
FSL_MSI_BANK_STRIDE = 0x200
FSL_MSI_BANK_BLOCK_SIZE = 0x200
FSL_MSI_ALIAS_PAGE = 0x44000  # bank i message-register page: + FSL_MSI_ALIAS_STRIDE * i
FSL_MSI_ALIAS_STRIDE = 0x1000
FSL_MSI_ALIAS_SIZE = 0x1000
MSIIR_ALIAS_OFFSET = 0x140  # MSIIR within its alias page (and within the MPIC bank block)
MSIIR1_ALIAS_OFFSET = 0x148  # MSIIR1 within its alias page

MSI_TYPE_MSIIR = "msiir"
MSI_TYPE_MSIIR1 = "msiir1"


@dataclass(frozen=True)
class MsiType:
    """One bank flavour: register count and the hwirq encoding shifts (fsl_msi.c)."""

    name: str
    nr_msi_reg: int
    srs_shift: int
    ibs_shift: int
    srs_mask: int
    msiir_offset: int  # of the message register within its alias page

    @property
    def hwirqs(self) -> int:
        return self.nr_msi_reg * IRQS_PER_MSI_REG


MSI_TYPES: dict[str, MsiType] = {
    MSI_TYPE_MSIIR: MsiType(MSI_TYPE_MSIIR, NR_MSI_REG_MSIIR, MSIIR_SRS_SHIFT, MSIIR_IBS_SHIFT,
                            MSIIR_SRS_MASK, MSIIR_ALIAS_OFFSET),
    MSI_TYPE_MSIIR1: MsiType(MSI_TYPE_MSIIR1, NR_MSI_REG_MSIIR1, MSIIR1_SRS_SHIFT,
                             MSIIR1_IBS_SHIFT, MSIIR1_SRS_MASK, MSIIR1_ALIAS_OFFSET),
}


def msi_to_hwirq(t: MsiType, msir_index: int, intr_index: int) -> int:
    """``msi_to_hwirq(msi, msir_index, intr_index)``: ``(reg << SRS) | (bit << IBS)``."""
    return (msir_index << t.srs_shift) | (intr_index << t.ibs_shift)


def hwirq_to_msi(t: MsiType, hwirq: int) -> tuple[int, int]:
    """Inverse of :func:`msi_to_hwirq`: (MSIR index, bit)."""
    return (hwirq >> t.srs_shift) & t.srs_mask, (hwirq >> t.ibs_shift) & MSI_IBS_MASK


def decode_message(t: MsiType, d: int) -> tuple[int, int]:
    """What the bank does with a write of ``d``: (MSIR index, bit); higher bits ignored."""
    return (d >> t.srs_shift) & t.srs_mask, (d >> t.ibs_shift) & MSI_IBS_MASK


Handler = Callable[[], Any]


class _IrqDomainLike(Protocol):
    def request(self, handler: Handler | None = None) -> int: ...
    def set_handler(self, n: int, handler: Handler | None) -> None: ...
    def free(self, n: int) -> None: ...
    def fire(self, n: int) -> bool: ...


class _LocalIrqs:
    """A private irq-number space, used when FslMsi is built without ``machine.irq``."""

    def __init__(self) -> None:
        self._handlers: dict[int, Handler | None] = {}
        self._next = 1

    def request(self, handler: Handler | None = None) -> int:
        n = self._next
        self._next += 1
        self._handlers[n] = handler
        return n

    def set_handler(self, n: int, handler: Handler | None) -> None:
        self._handlers[n] = handler

    def free(self, n: int) -> None:
        self._handlers.pop(n, None)

    def fire(self, n: int) -> bool:
        h = self._handlers.get(n)
        if h is None:
            return False
        h()
        return True


@dataclass
class MsiVector(_MsiVectorBase):
    """An allocated MSI: ``address`` (the bank's message register, physical), ``data`` (the
    hwirq), ``irq`` (host irq of the mapping), plus ``bank`` and ``hwirq``."""

    bank: int
    hwirq: int


class MsiBank:
    """One MSI bank: its MSIR registers, cascade state and hwirq bitmap.

    Bank register block at CCSR + 0x41600 + 0x200·i (``FSL_MSI_BANK_BLOCK_SIZE`` bytes)::

        offset   register      access
        0x000    MSIR0         R: 32 interrupt bits; reading clears them (acknowledge)
        0x010    MSIR1         R
         ...     ...
        0x070    MSIR7         R   (MSIIR banks: 8 MSIRs, 0x00-0x70)
         ...     ...
        0x0F0    MSIR15        R   (MSIIR1 banks: 16 MSIRs, 0x00-0xF0)
        0x140    MSIIR         W   (MSIIR banks only: the MPIC's in-block message register)

    Message-register alias page at CCSR + 0x44000 + 0x1000·i (``get_region(i)``)::

        offset   register      access
        0x140    MSIIR         W   data: [7:5] reg (SRS 5), [4:0] bit (IBS 0)      MSIIR banks
        0x148    MSIIR1        W   data: [8:4] bit (IBS 4), [3:0] reg (SRS 0)      MSIIR1 banks

    Other offsets read 0 and ignore writes (logged).
    """

    def __init__(self, owner: FslMsi, index: int) -> None:
        self.owner = owner
        self.index = index
        self.type = owner.type
        ccsr = owner.ccsr_base
        self.block_base = ccsr + FSL_MSI_BANK_BLOCK + FSL_MSI_BANK_STRIDE * index
        self.alias_base = ccsr + FSL_MSI_ALIAS_PAGE + FSL_MSI_ALIAS_STRIDE * index
        self.msiir_addr = self.alias_base + self.type.msiir_offset
        self.msir = [0] * self.type.nr_msi_reg
        self.cascade_masked = [False] * self.type.nr_msi_reg
        self.cascade_count = [0] * self.type.nr_msi_reg
        # msi_bitmap: True = allocated
        self.bitmap = bytearray(self.type.hwirqs)
        self.virq: dict[int, int] = {}  # hwirq -> host irq (irq_create_mapping)
        self.delivered: dict[int, int] = {}  # hwirq -> dispatch count with a handler
        self.block_region = _BankBlockRegion(self)
        self.alias_region = _AliasRegion(self)

    # ---- msi_bitmap ----------------------------------------------------------------------

    def alloc_hwirq(self) -> int:
        """``msi_bitmap_alloc_hwirqs(bmp, 1)``: the lowest free hwirq, or -1."""
        i = self.bitmap.find(0)
        if i < 0:
            return -1
        self.bitmap[i] = 1
        return i

    def free_hwirq(self, hwirq: int) -> None:
        """``msi_bitmap_free_hwirqs(bmp, hwirq, 1)``."""
        self.bitmap[hwirq] = 0

    def free_count(self) -> int:
        return len(self.bitmap) - sum(self.bitmap)

    # ---- receive path --------------------------------------------------------------------

    def message_write(self, d: int) -> None:
        """A 32-bit write of ``d`` to the message register: set the MSIR bit, run the cascade."""
        reg, bit = decode_message(self.type, d)
        self.msir[reg] |= 1 << bit
        if not self.cascade_masked[reg]:
            self.cascade(reg)

    def read_msir(self, reg: int) -> int:
        """Read MSIR ``reg``: returns its bits and clears them (the acknowledge)."""
        v = self.msir[reg]
        self.msir[reg] = 0
        return v

    def cascade(self, reg: int) -> None:
        """fsl_msi_cascade(): read-and-clear MSIR ``reg``, dispatch each set bit as a hwirq."""
        self.cascade_count[reg] += 1
        v = self.read_msir(reg)
        while v:
            bit = (v & -v).bit_length() - 1
            v &= v - 1
            self.owner._dispatch(self, msi_to_hwirq(self.type, reg, bit))

    def set_cascade_masked(self, reg: int, masked: bool) -> None:
        """Mask or unmask MSIR ``reg``'s cascade interrupt (the MPIC's MSIVPR mask).

        While masked, writes accumulate in the MSIR; unmasking with bits pending fires it.
        """
        self.cascade_masked[reg] = masked
        if not masked and self.msir[reg]:
            self.cascade(reg)


class _BankBlockRegion:
    """MMIO region of one bank register block (see :class:`MsiBank`)."""

    def __init__(self, bank: MsiBank) -> None:
        self.bank = bank

    def mmio_read(self, offset: int, size: int) -> int:
        b = self.bank
        if size == 4 and offset % MSI_MPIC_SIZE == 0 and offset // MSI_MPIC_SIZE < len(b.msir):
            return b.read_msir(offset // MSI_MPIC_SIZE)
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        b = self.bank
        if b.type.name == MSI_TYPE_MSIIR and offset == MSIIR_ALIAS_OFFSET and size == 4:
            b.message_write(value & 0xFFFFFFFF)
            return
        b.owner._log(f"fsl_msi: bank {b.index}: ignored {size}-byte write of {value:#x} "
                     f"to block offset {offset:#x}")


class _AliasRegion:
    """MMIO region of one bank's 4 KiB message-register page (see :class:`MsiBank`)."""

    def __init__(self, bank: MsiBank) -> None:
        self.bank = bank

    def mmio_read(self, offset: int, size: int) -> int:
        return 0  # the message register is write-only

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        b = self.bank
        if offset == b.type.msiir_offset and size == 4:
            b.message_write(value & 0xFFFFFFFF)
            return
        b.owner._log(f"fsl_msi: bank {b.index}: ignored {size}-byte write of {value:#x} "
                     f"to message page offset {offset:#x}")


class FslMsi:
    """The Freescale MSI controller: ``banks`` banks of one type, in probe order.

    ``msi_type`` is ``"msiir"`` (p4080) or ``"msiir1"`` (t4240).  ``irq`` is the host
    interrupt domain (``machine.irq``: request/set_handler/free/fire); without one the
    controller numbers its own irqs.  ``log`` receives spurious-interrupt and ignored-write
    lines (``machine.log``).
    """

    def __init__(
        self,
        *,
        msi_type: str = MSI_TYPE_MSIIR,
        banks: int = 3,
        ccsr_base: int = 0xF_FE00_0000,
        irq: _IrqDomainLike | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if msi_type not in MSI_TYPES:
            raise ValueError(f"msi type {msi_type!r}: expected one of {sorted(MSI_TYPES)}")
        if not 1 <= banks <= 16:
            raise ValueError(f"bank count {banks} out of range")
        self.type = MSI_TYPES[msi_type]
        self.ccsr_base = ccsr_base
        self.irq: _IrqDomainLike = irq if irq is not None else _LocalIrqs()
        self._logf = log
        self.banks = [MsiBank(self, i) for i in range(banks)]
        self.spurious = 0
        self.events: list[str] = []  # own log when no ``log`` is given

    @classmethod
    def from_machine(cls, machine: Machine) -> FslMsi:
        """Build from ``machine.msi_config`` ([msi]: type, banks, ccsr_base), with
        ``machine.irq`` and ``machine.log``, and register the regions on ``machine.bus``."""
        cfg = machine.msi_config
        msi = cls(
            msi_type=str(cfg.get("type", MSI_TYPE_MSIIR)),
            banks=int(cfg.get("banks", 3)),
            ccsr_base=int(cfg.get("ccsr_base", 0xF_FE00_0000)),
            irq=getattr(machine, "irq", None),
            log=getattr(machine, "log", None),
        )
        bus = getattr(machine, "bus", None)
        if bus is not None:
            msi.attach(bus)
        return msi

    def attach(self, bus: Any) -> None:
        """Register every bank's register block and message page: ``bus.add_mmio``."""
        for b in self.banks:
            bus.add_mmio(b.block_base, FSL_MSI_BANK_BLOCK_SIZE, b.block_region)
            bus.add_mmio(b.alias_base, FSL_MSI_ALIAS_SIZE, b.alias_region)

    def _log(self, msg: str) -> None:
        if self._logf is not None:
            self._logf(msg)
        else:
            self.events.append(msg)

    # ---- the MSI controller interface (architecture.md §6) ------------------------------

    def bank_count(self) -> int:
        """Number of banks (SPEC §6.4: GET_MSI_BANK_COUNT)."""
        return len(self.banks)

    def region_count(self) -> int:
        """``fsl_msi_get_region_count()``: one region per bank."""
        return len(self.banks)

    def get_region(self, region_num: int) -> tuple[int, int] | None:
        """``fsl_msi_get_region()``: (the bank's message register address, 0x1000), or None
        for an unknown index (the SDK returns -ENODEV)."""
        if not 0 <= region_num < len(self.banks):
            return None
        return self.banks[region_num].msiir_addr, FSL_MSI_ALIAS_SIZE

    def alloc(self) -> MsiVector | None:
        """fsl_setup_msi_irqs() for one vector: the first bank with a free hwirq, its lowest
        free one; maps it to a host irq.  None when every bank is full."""
        for b in self.banks:
            hwirq = b.alloc_hwirq()
            if hwirq < 0:
                continue
            virq = self.irq.request(None)
            b.virq[hwirq] = virq
            return MsiVector(address=b.msiir_addr, data=hwirq, irq=virq, bank=b.index,
                             hwirq=hwirq)
        return None

    def free(self, vec: MsiVector) -> None:
        """fsl_teardown_msi_irqs() for one vector: dispose of the mapping, free the hwirq."""
        b = self.banks[vec.bank]
        virq = b.virq.pop(vec.hwirq, None)
        if virq is None:
            self._log(f"fsl_msi: bank {vec.bank}: free of unallocated hwirq {vec.hwirq:#x}")
            return
        self.irq.free(virq)
        b.delivered.pop(vec.hwirq, None)
        b.free_hwirq(vec.hwirq)

    def set_handler(self, vec: MsiVector, fn: Handler | None) -> None:
        """Register ``fn()`` to run when ``vec`` arrives (None removes it)."""
        b = self.banks[vec.bank]
        virq = b.virq.get(vec.hwirq)
        if virq is None:
            raise KeyError(f"bank {vec.bank} hwirq {vec.hwirq:#x} is not allocated")
        self.irq.set_handler(virq, fn)

    def _dispatch(self, bank: MsiBank, hwirq: int) -> None:
        """generic_handle_irq(irq_find_mapping(hwirq)); no handler → spurious."""
        virq = bank.virq.get(hwirq)
        if virq is not None and self.irq.fire(virq):
            bank.delivered[hwirq] = bank.delivered.get(hwirq, 0) + 1
            return
        self.spurious += 1
        state = "no handler" if virq is not None else "not allocated"
        self._log(f"fsl_msi: bank {bank.index}: spurious hwirq {hwirq:#x} ({state})")

    # ---- helpers -------------------------------------------------------------------------

    def bank_of_address(self, phys: int) -> int | None:
        """The bank whose message register is at ``phys``, or None."""
        for b in self.banks:
            if b.msiir_addr == phys:
                return b.index
        return None

    def dump(self) -> dict[str, Any]:
        """Controller state for dumps and tests."""
        return {
            "type": self.type.name,
            "srs_shift": self.type.srs_shift,
            "ibs_shift": self.type.ibs_shift,
            "spurious": self.spurious,
            "banks": [
                {
                    "index": b.index,
                    "block": b.block_base,
                    "msiir": b.msiir_addr,
                    "region": self.get_region(b.index),
                    "msir": list(b.msir),
                    "cascade_masked": [i for i, m in enumerate(b.cascade_masked) if m],
                    "allocated": sorted(b.virq),
                    "irqs": dict(sorted(b.virq.items())),
                    "delivered": dict(sorted(b.delivered.items())),
                    "free": b.free_count(),
                }
                for b in self.banks
            ],
        }
