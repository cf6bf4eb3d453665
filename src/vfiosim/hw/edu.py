"""QEMU's ``edu`` device, re-implemented from its specification (SPEC §11.1, decision D9).

Source: QEMU ``docs/specs/edu.rst`` and ``hw/misc/edu.c`` where the text is silent; the
model's deliberate divergences are SPEC Appendix B. Hardware facts, before the code:

* Conventional PCI, vendor 0x1234 device 0x11e8 revision 0x10, class 0xFF00, subsystem
  0x1AF4/0x1100; BAR0 1 MiB 32-bit non-prefetchable memory; INTx pin A; one MSI vector
  (64-bit address, no per-vector masking) at config offset 0x40; no MSI-X. Config bytes
  0x4E–0xFF are plain read/write storage (QEMU makes device-specific config writable).
* BAR0 accepts only 4- and 8-byte accesses aligned to their size; anything else never reaches
  the device (a read returns 0, a write is dropped). Below 0x80 only 4-byte accesses act: an
  8-byte read there returns all-ones, an 8-byte write is ignored. Offsets not in the map read
  all-ones and ignore writes.
* A 4 KiB DMA buffer at device address 0x40000. DMA addresses are masked with the DMA mask
  (option ``edu_dma_mask_bits``, default 28); a changed address is logged ("clamping").
* Device time is the machine clock: a factorial completes after ``edu_factorial_delay_ms``,
  a DMA after ``edu_dma_delay_ms`` (QEMU: 100 ms).
* Model choices (decisions D9, D17): DMA and MSI need Bus Master Enable; a DMA that faults,
  runs with bus mastering off, or leaves the 4 KiB buffer moves no data, clears the run bit,
  raises no interrupt and is logged. A reset returns every register to power-on values and
  keeps the DMA buffer.
"""

from __future__ import annotations

from typing import Any

from vfiosim.hw.clock import Timer
from vfiosim.hw.pci import Bar, MsiCapability, PciFunction

EDU_VENDOR_ID = 0x1234  # PCI_VENDOR_ID_QEMU
EDU_DEVICE_ID = 0x11E8
EDU_REVISION = 0x10
EDU_CLASS = 0xFF0000  # PCI_CLASS_OTHERS (0xFF00), prog-if 0
EDU_SUBSYSTEM_VENDOR = 0x1AF4  # QEMU's default subsystem ids
EDU_SUBSYSTEM = 0x1100
EDU_BAR0_SIZE = 1 << 20
EDU_MSI_OFFSET = 0x40
EDU_MSI_LENGTH = 14

EDU_ID = 0x010000ED  # major 1, minor 0

# BAR0 registers
EDU_REG_ID = 0x00
EDU_REG_LIVENESS = 0x04
EDU_REG_FACTORIAL = 0x08
EDU_REG_STATUS = 0x20
EDU_REG_IRQ_STATUS = 0x24
EDU_REG_IRQ_RAISE = 0x60
EDU_REG_IRQ_ACK = 0x64
EDU_REG_DMA_SRC = 0x80
EDU_REG_DMA_DST = 0x88
EDU_REG_DMA_COUNT = 0x90
EDU_REG_DMA_CMD = 0x98

EDU_STATUS_COMPUTING = 0x01
EDU_STATUS_IRQFACT = 0x80

EDU_FACT_IRQ = 0x00000001
EDU_DMA_IRQ = 0x00000100

EDU_DMA_RUN = 0x1
EDU_DMA_DIR = 0x2  # 0: RAM -> edu (EDU_DMA_FROM_PCI), 1: edu -> RAM (EDU_DMA_TO_PCI)
EDU_DMA_IRQ_EN = 0x4

EDU_DMA_START = 0x40000
EDU_DMA_SIZE = 4096

_ONES32 = 0xFFFF_FFFF
_ONES64 = 0xFFFF_FFFF_FFFF_FFFF


def factorial32(n: int) -> int:
    """n! in 32-bit unsigned arithmetic (0! = 1). 2^32 divides n! from n = 34 on."""
    if n >= 34:
        return 0
    r = 1
    for i in range(2, n + 1):
        r = (r * i) & _ONES32
    return r


class Edu(PciFunction):
    """The edu device (SPEC §11.1). BAR0 register map::

        offset  access  register
        0x00    RO      identification 0x010000ED
        0x04    RW      liveness: reads the bitwise NOT of the last value written
        0x08    RW      factorial: write n starts it (ignored while computing)
        0x20    RW      status: 0x01 computing (RO), 0x80 raise FACT_IRQ when done
        0x24    RO      interrupt status
        0x60    WO      raise interrupt: irq_status |= value
        0x64    WO      acknowledge interrupt: irq_status &= ~value
        0x80    RW      DMA source address (64-bit)
        0x88    RW      DMA destination address (64-bit)
        0x90    RW      DMA transfer count (64-bit)
        0x98    RW      DMA command: 0x1 run, 0x2 direction (1: edu -> RAM), 0x4 raise
                        DMA_IRQ (0x100) when done
    """

    def __init__(
        self, machine: Any, name: str, rid: int, bar0: int = 0, irq_line: int = 0
    ) -> None:
        super().__init__(
            machine,
            name,
            rid,
            vendor=EDU_VENDOR_ID,
            device=EDU_DEVICE_ID,
            revision=EDU_REVISION,
            class_code=EDU_CLASS,
            subsystem_vendor=EDU_SUBSYSTEM_VENDOR,
            subsystem=EDU_SUBSYSTEM,
            bars=[Bar(EDU_BAR0_SIZE)],
            bar_addresses={0: bar0},
            interrupt_pin=1,
            interrupt_line=irq_line,
        )
        self.add_cap(MsiCapability(vectors=1, is64=True, masking=False), EDU_MSI_OFFSET)
        self.set_writable(EDU_MSI_OFFSET + EDU_MSI_LENGTH, 0x100)
        self.finalize()
        opts = machine.options
        self.dma_mask = (1 << int(opts.edu_dma_mask_bits)) - 1
        self.dma_delay_ns = int(float(opts.edu_dma_delay_ms) * 1_000_000)
        self.fact_delay_ns = int(float(opts.edu_factorial_delay_ms) * 1_000_000)
        self.dma_buf = bytearray(EDU_DMA_SIZE)
        self._fact_timer: Timer | None = None
        self._dma_timer: Timer | None = None
        self.reset_device()

    # -- state -----------------------------------------------------------------------------

    def reset_device(self) -> None:
        """Power-on registers; a running DMA or factorial is cancelled; the buffer is kept."""
        for t in (self._fact_timer, self._dma_timer):
            if t is not None:
                t.cancel()
        self._fact_timer = self._dma_timer = None
        self.liveness = 0
        self.fact = 0
        self.status = 0
        self.irq_status = 0
        self.dma_src = 0
        self.dma_dst = 0
        self.dma_count = 0
        self.dma_cmd = 0

    # -- interrupts ------------------------------------------------------------------------

    def _msi_enabled(self) -> bool:
        return self.msi_kind == "msi"

    def raise_irq(self, value: int) -> None:
        """edu_raise_irq(): a new MSI on every raise that leaves irq_status non-zero."""
        self.irq_status |= value & _ONES32
        if self.irq_status:
            if self._msi_enabled():
                self.raise_msi(0)
            else:
                self.set_intx(True)

    def lower_irq(self, value: int) -> None:
        """edu_lower_irq(): INTx deasserts when irq_status reaches 0 (MSI: nothing more)."""
        self.irq_status &= ~value & _ONES32
        if not self.irq_status and not self._msi_enabled():
            self.set_intx(False)

    # -- BAR0 ------------------------------------------------------------------------------

    def bar_mmio_read(self, bar: int, offset: int, size: int) -> int:
        if bar != 0 or size not in (4, 8) or offset % size:
            return 0  # never reaches the device (edu_mmio_ops.valid)
        if offset < 0x80 and size != 4:
            return _ONES64
        regs = {
            EDU_REG_ID: EDU_ID,
            EDU_REG_LIVENESS: self.liveness,
            EDU_REG_FACTORIAL: self.fact,
            EDU_REG_STATUS: self.status,
            EDU_REG_IRQ_STATUS: self.irq_status,
            EDU_REG_DMA_SRC: self.dma_src,
            EDU_REG_DMA_DST: self.dma_dst,
            EDU_REG_DMA_COUNT: self.dma_count,
            EDU_REG_DMA_CMD: self.dma_cmd,
        }
        if offset not in regs:
            return _ONES64
        return regs[offset] & ((1 << (8 * size)) - 1)

    def bar_mmio_write(self, bar: int, offset: int, size: int, value: int) -> None:
        if bar != 0 or size not in (4, 8) or offset % size:
            return  # never reaches the device
        if offset < 0x80 and size != 4:
            return
        if offset == EDU_REG_LIVENESS:
            self.liveness = ~value & _ONES32
        elif offset == EDU_REG_FACTORIAL:
            if self.status & EDU_STATUS_COMPUTING:
                return
            self.fact = value & _ONES32
            self.status |= EDU_STATUS_COMPUTING
            self._fact_timer = self.machine.clock.schedule(self.fact_delay_ns, self._fact_done)
        elif offset == EDU_REG_STATUS:
            self.status = (self.status & ~EDU_STATUS_IRQFACT) | (value & EDU_STATUS_IRQFACT)
        elif offset == EDU_REG_IRQ_RAISE:
            self.raise_irq(value)
        elif offset == EDU_REG_IRQ_ACK:
            self.lower_irq(value)
        elif offset in (EDU_REG_DMA_SRC, EDU_REG_DMA_DST, EDU_REG_DMA_COUNT):
            if self.dma_cmd & EDU_DMA_RUN:
                return  # ignored while a DMA runs
            attr = {EDU_REG_DMA_SRC: "dma_src", EDU_REG_DMA_DST: "dma_dst"}.get(
                offset, "dma_count"
            )
            setattr(self, attr, value)  # a 4-byte write zero-extends
        elif offset == EDU_REG_DMA_CMD:
            if not value & EDU_DMA_RUN or self.dma_cmd & EDU_DMA_RUN:
                return
            self.dma_cmd = value
            self._dma_timer = self.machine.clock.schedule(self.dma_delay_ns, self._dma_done)

    # -- device work (clock events) --------------------------------------------------------

    def _fact_done(self) -> None:
        self._fact_timer = None
        self.fact = factorial32(self.fact)
        self.status &= ~EDU_STATUS_COMPUTING
        if self.status & EDU_STATUS_IRQFACT:
            self.raise_irq(EDU_FACT_IRQ)

    def _clamp(self, addr: int) -> int:
        res = addr & self.dma_mask
        if res != addr:
            self.machine.log(f"{self.name}: edu: clamping DMA 0x{addr:016x} to 0x{res:016x}")
        return res

    def _in_buffer(self, addr: int, count: int) -> bool:
        end = (addr + count) & _ONES64
        ok = end >= addr and addr >= EDU_DMA_START and end <= EDU_DMA_START + EDU_DMA_SIZE
        if not ok:
            self.machine.log(
                f"{self.name}: edu: DMA range 0x{addr:x}+0x{count:x} out of bounds "
                f"(0x{EDU_DMA_START:x}-0x{EDU_DMA_START + EDU_DMA_SIZE - 1:x}): refused"
            )
        return ok

    def _dma_done(self) -> None:
        self._dma_timer = None
        cmd = self.dma_cmd
        if not cmd & EDU_DMA_RUN:
            return
        count = self.dma_count
        ok = False
        if not cmd & EDU_DMA_DIR:  # RAM -> edu
            if self._in_buffer(self.dma_dst, count):
                data = self.dma_read(self._clamp(self.dma_src), count)
                if data is not None:
                    off = self.dma_dst - EDU_DMA_START
                    self.dma_buf[off : off + count] = data
                    ok = True
        else:  # edu -> RAM
            if self._in_buffer(self.dma_src, count):
                off = self.dma_src - EDU_DMA_START
                data = bytes(self.dma_buf[off : off + count])
                ok = self.dma_write(self._clamp(self.dma_dst), data)
        self.dma_cmd &= ~EDU_DMA_RUN
        if not ok:
            self.machine.log(f"{self.name}: edu: DMA moved no data; no interrupt")
            return
        if cmd & EDU_DMA_IRQ_EN:
            self.raise_irq(EDU_DMA_IRQ)


__all__ = ["Edu", "factorial32"]
