"""dmacopy: vfiosim's own bulk-DMA copy engine (docs/dmacopy.md is its data sheet).

Hardware facts, before the code:

* PCI Express endpoint: vendor 0x1234 device 0xDC01 revision 0x01, class 0x080100 (system
  peripheral, DMA controller), subsystem 0x1AF4/0x1100. Capabilities: PCI Express (0x40,
  FLR capable), Power Management (0x80), MSI-X (0x90) with 8 vectors. No INTx, no MSI.
* BAR0: 16 KiB, 32-bit non-prefetchable memory. Registers at 0x0000–0x0FFF, MSI-X table at
  0x2000 (8 × 16 bytes), PBA at 0x3000.
* One descriptor ring in host memory (``RING_SIZE`` entries of 32 bytes at ``RING_BASE``),
  produced by the driver (``TAIL``, the doorbell) and consumed by the engine (``HEAD``).
  All ring, data, status and completion accesses are DMA through the IOMMU; the engine
  needs Bus Master Enable.
* Work runs on the machine clock: a doorbell schedules the engine after ``dmacopy_delay_us``
  (option, default 0); the engine then processes every descriptor up to ``TAIL``. With the
  manual clock nothing happens until the test advances it.
* A fault on a descriptor's source or destination aborts that descriptor: nothing is moved
  for it (both are translated before a byte moves), its status word says why, and the
  engine goes on. A fault fetching descriptors or writing status halts the engine.
"""

from __future__ import annotations

import struct
from typing import Any

from vfiosim.hw.clock import Timer
from vfiosim.hw.pci import Bar, MsixCapability, PcieCapability, PciFunction, PmCapability

DMACOPY_VENDOR_ID = 0x1234
DMACOPY_DEVICE_ID = 0xDC01
DMACOPY_REVISION = 0x01
DMACOPY_CLASS = 0x080100  # base 0x08 system peripheral, subclass 0x01 DMA controller
DMACOPY_SUBSYSTEM_VENDOR = 0x1AF4
DMACOPY_SUBSYSTEM = 0x1100
DMACOPY_BAR0_SIZE = 0x4000
DMACOPY_EXP_OFFSET = 0x40
DMACOPY_PM_OFFSET = 0x80
DMACOPY_MSIX_OFFSET = 0x90
DMACOPY_MSIX_VECTORS = 8
DMACOPY_MSIX_TABLE = 0x2000
DMACOPY_MSIX_PBA = 0x3000

DMACOPY_ID = 0x444D4143  # "DMAC"
DMACOPY_VERSION = 0x00010000  # 1.0

# BAR0 registers (docs/dmacopy.md §2)
DMAC_REG_ID = 0x000
DMAC_REG_VERSION = 0x004
DMAC_REG_CTRL = 0x008
DMAC_REG_STATUS = 0x00C
DMAC_REG_RING_LO = 0x010
DMAC_REG_RING_HI = 0x014
DMAC_REG_RING_SIZE = 0x018
DMAC_REG_TAIL = 0x020
DMAC_REG_HEAD = 0x024
DMAC_REG_COMPL_LO = 0x028
DMAC_REG_COMPL_HI = 0x02C
DMAC_REG_COMPLETED = 0x030
DMAC_REG_ERR_VECTOR = 0x034
DMAC_REG_ERR_DESC = 0x038
DMAC_REGS_END = 0x1000

DMAC_CTRL_ENABLE = 0x1
DMAC_CTRL_RESET = 0x2
DMAC_CTRL_ERR_IRQ_EN = 0x4

DMAC_STATUS_BUSY = 0x1
DMAC_STATUS_HALTED = 0x2
DMAC_STATUS_ERR = 0x4
DMAC_STATUS_ERR_CODE_SHIFT = 8

# Descriptor (docs/dmacopy.md §3)
DMAC_DESC_SIZE = 32
DMAC_DESC_FMT = "<QQIHH"  # src, dst, len, flags, vector
DMAC_DESC_STATUS = 0x18  # u32 status, u32 bytes, written back by the engine
DMAC_DESC_F_INT = 0x0001
DMAC_MAX_LEN = 16 << 20
DMAC_FETCH_MAX = 64  # descriptors fetched per DMA read

DMAC_DESC_DONE = 0x0000_0001
DMAC_DESC_ERROR = 0x8000_0000

# Error codes: descriptor errors (status word) and engine errors (STATUS.ERR_CODE)
DMAC_ERR_LEN = 0x01
DMAC_ERR_FLAGS = 0x02
DMAC_ERR_SRC = 0x03
DMAC_ERR_DST = 0x04
DMAC_ERR_RING = 0x10
DMAC_ERR_FETCH = 0x11
DMAC_ERR_WRITEBACK = 0x12

_ONES32 = 0xFFFF_FFFF


class DmaCopy(PciFunction):
    """The dmacopy engine. BAR0 register map (docs/dmacopy.md §2)::

        offset  access     register
        0x000   RO         ID 0x444D4143 ("DMAC")
        0x004   RO         VERSION 0x00010000
        0x008   RW         CTRL: 0 ENABLE, 1 RESET (self-clearing), 2 ERR_IRQ_EN
        0x00C   RO/RW1C    STATUS: 0 BUSY, 1 HALTED, 2 ERR (RW1C), 15:8 ERR_CODE
        0x010   RW         RING_BASE low (bits 4:0 read 0)   } ignored while
        0x014   RW         RING_BASE high                   } ENABLE is set
        0x018   RW         RING_SIZE (entries, power of two, 2..65536)
        0x020   RW         TAIL: producer index; a write rings the doorbell
        0x024   RO         HEAD: consumer index
        0x028   RW         COMPL_ADDR low (bits 2:0 read 0; 0 = no completion record)
        0x02C   RW         COMPL_ADDR high
        0x030   RO         COMPLETED: descriptors completed since reset
        0x034   RW         ERR_VECTOR: MSI-X vector of engine errors (bits 2:0)
        0x038   RO         ERR_DESC: ring index at which the engine halted
        0x2000  RW         MSI-X table (8 entries)
        0x3000  RO         MSI-X PBA

    Registers take 4-byte accesses aligned to 4; an aligned 8-byte access is two 4-byte
    accesses (low dword first). Other accesses read all-ones and are dropped; unlisted
    offsets below 0x1000 read 0 and ignore writes.
    """

    def __init__(
        self, machine: Any, name: str, rid: int, bar0: int = 0, irq_line: int = 0
    ) -> None:
        super().__init__(
            machine,
            name,
            rid,
            vendor=DMACOPY_VENDOR_ID,
            device=DMACOPY_DEVICE_ID,
            revision=DMACOPY_REVISION,
            class_code=DMACOPY_CLASS,
            subsystem_vendor=DMACOPY_SUBSYSTEM_VENDOR,
            subsystem=DMACOPY_SUBSYSTEM,
            bars=[Bar(DMACOPY_BAR0_SIZE)],
            bar_addresses={0: bar0},
            interrupt_pin=0,
            interrupt_line=irq_line,
            pcie=True,
        )
        self.add_cap(PcieCapability(), DMACOPY_EXP_OFFSET)
        self.add_cap(PmCapability(), DMACOPY_PM_OFFSET)
        self.add_cap(
            MsixCapability(
                DMACOPY_MSIX_VECTORS, 0, DMACOPY_MSIX_TABLE, 0, DMACOPY_MSIX_PBA
            ),
            DMACOPY_MSIX_OFFSET,
        )
        self.finalize()
        self.delay_ns = int(float(getattr(machine.options, "dmacopy_delay_us", 0.0)) * 1000)
        self._timer: Timer | None = None
        self.bytes_copied = 0
        self.reset_device()

    def reset_device(self) -> None:
        """Engine reset (CTRL.RESET, FLR, bus reset): every register to 0, work cancelled."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self.ctrl = 0
        self.halted = False
        self.err = False
        self.err_code = 0
        self.ring_base = 0
        self.ring_size = 0
        self.tail = 0
        self.head = 0
        self.compl_addr = 0
        self.completed = 0
        self.err_vector = 0
        self.err_desc = 0

    # -- registers -------------------------------------------------------------------------

    @property
    def status(self) -> int:
        val = self.err_code << DMAC_STATUS_ERR_CODE_SHIFT
        if self._timer is not None and self._timer.pending:
            val |= DMAC_STATUS_BUSY
        if self.halted:
            val |= DMAC_STATUS_HALTED
        if self.err:
            val |= DMAC_STATUS_ERR
        return val

    def _read32(self, offset: int) -> int:
        regs = {
            DMAC_REG_ID: DMACOPY_ID,
            DMAC_REG_VERSION: DMACOPY_VERSION,
            DMAC_REG_CTRL: self.ctrl,
            DMAC_REG_STATUS: self.status,
            DMAC_REG_RING_LO: self.ring_base & _ONES32,
            DMAC_REG_RING_HI: self.ring_base >> 32,
            DMAC_REG_RING_SIZE: self.ring_size,
            DMAC_REG_TAIL: self.tail,
            DMAC_REG_HEAD: self.head,
            DMAC_REG_COMPL_LO: self.compl_addr & _ONES32,
            DMAC_REG_COMPL_HI: self.compl_addr >> 32,
            DMAC_REG_COMPLETED: self.completed,
            DMAC_REG_ERR_VECTOR: self.err_vector,
            DMAC_REG_ERR_DESC: self.err_desc,
        }
        return regs.get(offset, 0)

    def _write32(self, offset: int, value: int) -> None:
        enabled = bool(self.ctrl & DMAC_CTRL_ENABLE)
        if offset == DMAC_REG_CTRL:
            if value & DMAC_CTRL_RESET:
                self.reset_device()
                return
            self.ctrl = value & (DMAC_CTRL_ENABLE | DMAC_CTRL_ERR_IRQ_EN)
            if self.ctrl & DMAC_CTRL_ENABLE and not enabled:
                self._kick()
            if not self.ctrl & DMAC_CTRL_ENABLE and self._timer is not None:
                self._timer.cancel()
                self._timer = None
        elif offset == DMAC_REG_STATUS:
            if value & DMAC_STATUS_ERR and self.err:
                self.err = False
                self.halted = False
                self.err_code = 0
        elif offset in (DMAC_REG_RING_LO, DMAC_REG_RING_HI, DMAC_REG_RING_SIZE):
            if enabled:
                return
            if offset == DMAC_REG_RING_LO:
                self.ring_base = (self.ring_base & ~_ONES32) | (value & ~0x1F & _ONES32)
            elif offset == DMAC_REG_RING_HI:
                self.ring_base = (value << 32) | (self.ring_base & _ONES32)
            else:
                self.ring_size = value
        elif offset == DMAC_REG_TAIL:
            self.tail = value
            self._kick()
        elif offset == DMAC_REG_COMPL_LO:
            self.compl_addr = (self.compl_addr & ~_ONES32) | (value & ~0x7 & _ONES32)
        elif offset == DMAC_REG_COMPL_HI:
            self.compl_addr = (value << 32) | (self.compl_addr & _ONES32)
        elif offset == DMAC_REG_ERR_VECTOR:
            self.err_vector = value & (DMACOPY_MSIX_VECTORS - 1)

    def bar_mmio_read(self, bar: int, offset: int, size: int) -> int:
        if bar != 0 or offset >= DMAC_REGS_END or size not in (4, 8) or offset % size:
            return (1 << (8 * size)) - 1
        if size == 8:
            return self._read32(offset) | (self._read32(offset + 4) << 32)
        return self._read32(offset)

    def bar_mmio_write(self, bar: int, offset: int, size: int, value: int) -> None:
        if bar != 0 or offset >= DMAC_REGS_END or size not in (4, 8) or offset % size:
            return
        self._write32(offset, value & _ONES32)
        if size == 8:
            self._write32(offset + 4, value >> 32)

    # -- the engine ------------------------------------------------------------------------

    def _kick(self) -> None:
        """Doorbell: schedule the engine unless it is already scheduled."""
        if not self.ctrl & DMAC_CTRL_ENABLE or self.halted:
            return
        if self._timer is None or not self._timer.pending:
            self._timer = self.machine.clock.schedule(self.delay_ns, self._run)

    def _halt(self, code: int, what: str) -> None:
        self.halted = True
        self.err = True
        self.err_code = code
        self.err_desc = self.head
        self.machine.log(f"{self.name}: dmacopy halted at descriptor {self.head}: {what}")
        if self.ctrl & DMAC_CTRL_ERR_IRQ_EN:
            self.raise_msi(self.err_vector)

    def _run(self) -> None:
        self._timer = None
        if not self.ctrl & DMAC_CTRL_ENABLE or self.halted:
            return
        size = self.ring_size
        if size < 2 or size > 65536 or size & (size - 1) or self.tail >= size:
            self._halt(DMAC_ERR_RING, f"bad ring (size {size}, tail {self.tail})")
            return
        while self.head != self.tail and not self.halted and self.ctrl & DMAC_CTRL_ENABLE:
            avail = (self.tail - self.head) % size
            n = min(avail, size - self.head, DMAC_FETCH_MAX)
            base = self.ring_base + self.head * DMAC_DESC_SIZE
            raw = self.dma_read(base, n * DMAC_DESC_SIZE, what="descriptor fetch")
            if raw is None:
                self._halt(DMAC_ERR_FETCH, "descriptor fetch failed")
                return
            for i in range(n):
                if not self._execute(raw, i * DMAC_DESC_SIZE, base + i * DMAC_DESC_SIZE, size):
                    return

    def _execute(self, raw: bytes, off: int, desc_addr: int, size: int) -> bool:
        """One descriptor. Returns False if the engine halted."""
        src, dst, length, flags, vector = struct.unpack_from(DMAC_DESC_FMT, raw, off)
        code = 0
        if flags & ~DMAC_DESC_F_INT or vector >= DMACOPY_MSIX_VECTORS:
            code = DMAC_ERR_FLAGS
        elif length == 0 or length > DMAC_MAX_LEN:
            code = DMAC_ERR_LEN
        else:
            nfaults = len(self.machine.faults)
            if self.dma_copy(dst, src, length, what="copy"):
                self.bytes_copied += length
            else:
                faults = self.machine.faults
                wrote = len(faults) > nfaults and faults[-1].direction == "write"
                code = DMAC_ERR_DST if wrote else DMAC_ERR_SRC
        if code:
            self.machine.log(
                f"{self.name}: dmacopy descriptor {self.head} failed with error 0x{code:x}"
            )
        status = DMAC_DESC_DONE if code == 0 else DMAC_DESC_ERROR | code
        moved = length if code == 0 else 0
        if not self.dma_write(
            desc_addr + DMAC_DESC_STATUS, struct.pack("<II", status, moved), what="status"
        ):
            self._halt(DMAC_ERR_WRITEBACK, "status write-back failed")
            return False
        self.head = (self.head + 1) % size
        self.completed = (self.completed + 1) & _ONES32
        if self.compl_addr and not self.dma_write(
            self.compl_addr, struct.pack("<II", self.head, self.completed), what="completion"
        ):
            self._halt(DMAC_ERR_WRITEBACK, "completion record write failed")
            return False
        if flags & DMAC_DESC_F_INT and code != DMAC_ERR_FLAGS:
            self.raise_msi(vector)
        return True


def pack_descriptor(src: int, dst: int, length: int, flags: int = 0, vector: int = 0) -> bytes:
    """A descriptor as the driver writes it (status and bytes 0)."""
    return struct.pack(DMAC_DESC_FMT, src, dst, length, flags, vector) + bytes(8)
