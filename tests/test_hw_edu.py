"""hw/edu.py against SPEC §11.1 (and §11.2 for what the device itself stores)."""

from __future__ import annotations

import pytest
from hw_helpers import Buffer, make_machine, msi_counter

from vfiosim.hw.edu import (
    EDU_DMA_IRQ,
    EDU_FACT_IRQ,
    Edu,
    factorial32,
)
from vfiosim.kernel.uaccess import LocalMemory
from vfiosim.uapi import pci_regs as R

MS = 1_000_000
ONES32 = 0xFFFF_FFFF
ONES64 = 0xFFFF_FFFF_FFFF_FFFF


def make_edu(**options):  # noqa: ANN001, ANN201
    m = make_machine(**options)
    e = Edu(m, "0000:01:00.0", 0x100, bar0=0xFE00_0000, irq_line=11)
    e.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY)
    return m, e


def rd(e: Edu, off: int, size: int = 4) -> int:
    return e.bar_read(0, off, size)


def wr(e: Edu, off: int, value: int, size: int = 4) -> None:
    e.bar_write(0, off, size, value)


# -- config space ----------------------------------------------------------------------------


def test_identity_and_config() -> None:
    m, e = make_edu()
    assert e.cfg_read(R.PCI_VENDOR_ID, 4) == 0x11E8_1234
    assert e.cfg_read(R.PCI_REVISION_ID, 1) == 0x10
    assert e.cfg_read(R.PCI_CLASS_DEVICE, 2) == 0xFF00
    assert e.cfg_read(R.PCI_CLASS_PROG, 1) == 0
    assert e.cfg_read(R.PCI_SUBSYSTEM_VENDOR_ID, 2) == 0x1AF4
    assert e.cfg_read(R.PCI_SUBSYSTEM_ID, 2) == 0x1100
    assert e.cfg_read(R.PCI_STATUS, 2) == R.PCI_STATUS_CAP_LIST
    assert e.cfg_read(R.PCI_CAPABILITY_LIST, 1) == 0x40
    assert e.cfg_read(R.PCI_INTERRUPT_PIN, 1) == 1
    assert e.cfg_read(R.PCI_INTERRUPT_LINE, 1) == 11
    assert e.cfg_read(R.PCI_BASE_ADDRESS_0, 4) == 0xFE00_0000
    e.cfg_write(R.PCI_BASE_ADDRESS_0, 4, ONES32)
    assert e.cfg_read(R.PCI_BASE_ADDRESS_0, 4) == 0xFFF0_0000
    for bar in range(1, 6):
        e.cfg_write(R.PCI_BASE_ADDRESS_0 + 4 * bar, 4, ONES32)
        assert e.cfg_read(R.PCI_BASE_ADDRESS_0 + 4 * bar, 4) == 0
    assert not e.is_pcie and e.cfg_size == 256
    assert (e.msi_vectors, e.msix_vectors, e.msix_bar) == (1, 0, None)
    assert e.bars[0].size == 1 << 20 and e.bars[0].mem and not e.bars[0].is64
    e.cfg_write(R.PCI_CACHE_LINE_SIZE, 1, 0x10)
    assert e.cfg_read(R.PCI_CACHE_LINE_SIZE, 1) == 0x10


def test_msi_capability_layout() -> None:
    m, e = make_edu()
    assert e.find_cap(R.PCI_CAP_ID_MSI) == 0x40
    assert e.cfg_read(0x40, 4) == (R.PCI_MSI_FLAGS_64BIT << 16) | R.PCI_CAP_ID_MSI
    assert e.cfg_read(0x41, 1) == 0  # next pointer: end of list
    e.cfg_write(0x4C, 4, 0xCAFE_BEEF)  # data (cap) | device-specific 0x4E
    assert e.cfg_read(0x4C, 2) == 0xBEEF and e.cfg_read(0x4E, 2) == 0xCAFE


def test_device_specific_config_is_stored() -> None:
    m, e = make_edu()
    for off in (0x4E, 0x50, 0x80, 0xFC):
        e.cfg_write(off, 2, 0xA55A)
        assert e.cfg_read(off, 2) == 0xA55A
    e.cfg_write(0x3E, 2, 0xFFFF)  # other header bytes: read-only 0
    assert e.cfg_read(0x3E, 2) == 0


# -- registers and access rules --------------------------------------------------------------


def test_identification_and_liveness() -> None:
    m, e = make_edu()
    assert rd(e, 0x00) == 0x010000ED
    assert rd(e, 0x04) == 0  # before any write
    wr(e, 0x04, 0x12345678)
    assert rd(e, 0x04) == 0xEDCBA987
    wr(e, 0x00, 0)  # read-only
    assert rd(e, 0x00) == 0x010000ED


@pytest.mark.parametrize("off,size", [(0x00, 1), (0x00, 2), (0x02, 2), (0x04, 8), (0x81, 4),
                                      (0x84, 8), (0x06, 4)])
def test_invalid_accesses_never_reach_the_device(off: int, size: int) -> None:
    m, e = make_edu()
    wr(e, 0x04, 0)  # liveness reads ONES32
    expected = ONES64 if (off < 0x80 and size == 8 and off % 8 == 0) else 0
    assert rd(e, off, size) == expected & ((1 << (8 * size)) - 1)
    wr(e, off, 5, size)
    assert rd(e, 0x04) == ONES32  # nothing changed


def test_eight_byte_below_0x80_reads_ones_and_write_ignored() -> None:
    m, e = make_edu()
    assert rd(e, 0x00, 8) == ONES64
    wr(e, 0x08, 5, 8)
    m.clock.run_until_idle()
    assert rd(e, 0x08) == 0 and rd(e, 0x20) == 0


def test_unlisted_and_write_only_offsets_read_ones() -> None:
    m, e = make_edu()
    for off in (0x0C, 0x10, 0x28, 0x60, 0x64, 0x84, 0x8C, 0x94, 0x9C, 0xA0, 0xFFFFC):
        assert rd(e, off) == ONES32, hex(off)
    assert rd(e, 0xA0, 8) == ONES64


def test_dma_registers_64_bit_and_4_byte_zero_extend() -> None:
    m, e = make_edu()
    wr(e, 0x80, 0x1122_3344_5566_7788, 8)
    assert rd(e, 0x80, 8) == 0x1122_3344_5566_7788
    assert rd(e, 0x80) == 0x5566_7788
    wr(e, 0x80, 0xAABB_CCDD)
    assert rd(e, 0x80, 8) == 0xAABB_CCDD
    wr(e, 0x84, 0x1)  # the upper half is not a register
    assert rd(e, 0x80, 8) == 0xAABB_CCDD
    wr(e, 0x88, 5, 8)
    wr(e, 0x90, 6, 8)
    assert (rd(e, 0x88, 8), rd(e, 0x90, 8)) == (5, 6)
    wr(e, 0x98, 0x2)  # no run bit: ignored
    assert rd(e, 0x98) == 0


# -- factorial -------------------------------------------------------------------------------


def test_factorial32() -> None:
    assert [factorial32(n) for n in (0, 1, 5, 12)] == [1, 1, 120, 479001600]
    assert factorial32(13) == 6227020800 & ONES32
    assert factorial32(33) != 0 and factorial32(34) == 0 and factorial32(ONES32) == 0


def test_factorial_on_the_clock_without_interrupt() -> None:
    m, e = make_edu(edu_factorial_delay_ms=2.0)
    seen: list[bool] = []
    e.on_intx(seen.append)
    wr(e, 0x08, 10)
    assert rd(e, 0x20) & 0x01 and rd(e, 0x08) == 10
    wr(e, 0x08, 3)  # ignored while computing
    m.clock.advance(2 * MS - 1)
    assert rd(e, 0x20) & 0x01 and rd(e, 0x08) == 10
    m.clock.advance(1)
    assert rd(e, 0x20) == 0 and rd(e, 0x08) == 3628800
    assert rd(e, 0x24) == 0 and seen == []


def test_factorial_with_interrupt_intx() -> None:
    m, e = make_edu()
    seen: list[bool] = []
    e.on_intx(seen.append)
    wr(e, 0x20, 0xFF)  # only 0x80 is writable
    assert rd(e, 0x20) == 0x80
    wr(e, 0x08, 5)
    assert rd(e, 0x20) == 0x81
    m.clock.run_until_idle()
    assert rd(e, 0x08) == 120 and rd(e, 0x24) == EDU_FACT_IRQ and seen == [True]
    assert e.cfg_read(R.PCI_STATUS, 2) & R.PCI_STATUS_INTERRUPT
    wr(e, 0x64, EDU_FACT_IRQ)
    assert rd(e, 0x24) == 0 and seen == [True, False]
    wr(e, 0x20, 0)
    assert rd(e, 0x20) == 0


# -- interrupts ------------------------------------------------------------------------------


def test_raise_and_ack_intx() -> None:
    m, e = make_edu()
    seen: list[bool] = []
    e.on_intx(seen.append)
    wr(e, 0x60, 0x30)
    assert rd(e, 0x24) == 0x30 and seen == [True]
    wr(e, 0x64, 0x10)
    assert rd(e, 0x24) == 0x20 and seen == [True]
    wr(e, 0x64, 0x20)
    assert rd(e, 0x24) == 0 and seen == [True, False]


def test_raise_msi_every_write_and_bus_master() -> None:
    m, e = make_edu()
    vec, hits = msi_counter(m)
    e.msi_set_enabled("msi", 1)
    e.msi_program(0, vec.address, vec.data)
    wr(e, 0x60, 1)
    assert hits == [] and "bus mastering disabled" in m.events[-1]  # dropped and logged
    e.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER)
    wr(e, 0x60, 1)
    wr(e, 0x60, 1)  # already set: a new MSI anyway
    assert hits == [1, 1]
    wr(e, 0x64, 1)
    assert rd(e, 0x24) == 0 and not e.intx_level  # MSI mode: INTx never asserted
    wr(e, 0x60, 0)  # irq_status stays 0: nothing sent
    assert hits == [1, 1]


# -- DMA -------------------------------------------------------------------------------------


class DmaSetup:
    def __init__(self, **options) -> None:  # noqa: ANN003
        self.m, self.e = make_edu(**options)
        self.e.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER)
        self.buf = Buffer(3 * 4096, fill=0xEE)  # canary page, data page, canary page
        ranges = self.m.bus.pin(LocalMemory(), self.buf.addr, 3 * 4096)
        self.iova = 0x10_0000
        self.m.iommu.map(self.iova, ranges[1:2])  # only the middle page is mapped
        self.seen: list[bool] = []
        self.e.on_intx(self.seen.append)

    def start(self, src: int, dst: int, count: int, cmd: int) -> None:
        wr(self.e, 0x80, src, 8)
        wr(self.e, 0x88, dst, 8)
        wr(self.e, 0x90, count, 8)
        wr(self.e, 0x98, cmd)


def test_dma_ram_to_edu_and_back() -> None:
    s = DmaSetup()
    s.buf[4096:4096 + 16] = b"0123456789abcdef"
    s.start(s.iova, 0x40000, 16, 0x1 | 0x4)
    assert rd(s.e, 0x98) == 0x5
    wr(s.e, 0x80, 0, 8)  # ignored while running
    assert rd(s.e, 0x80, 8) == s.iova
    s.m.clock.advance(100 * MS - 1)
    assert rd(s.e, 0x98) == 0x5 and s.seen == []
    s.m.clock.advance(1)
    assert rd(s.e, 0x98) == 0x4 and rd(s.e, 0x24) == EDU_DMA_IRQ and s.seen == [True]
    assert bytes(s.e.dma_buf[:16]) == b"0123456789abcdef"
    wr(s.e, 0x64, EDU_DMA_IRQ)
    s.start(0x40000, s.iova + 0x800, 16, 0x1 | 0x2)  # edu -> RAM, no interrupt
    s.m.clock.run_until_idle()
    assert s.buf[4096 + 0x800:4096 + 0x810] == b"0123456789abcdef"
    assert s.buf[4096 + 0x7FF:4096 + 0x800] == b"\xee"
    assert rd(s.e, 0x24) == 0 and s.seen == [True, False]


def test_dma_full_buffer_and_delay_option() -> None:
    s = DmaSetup(edu_dma_delay_ms=1.0)
    s.buf[4096:8192] = bytes(range(256)) * 16
    s.start(s.iova, 0x40000, 4096, 0x1)
    s.m.clock.advance(1 * MS)
    assert rd(s.e, 0x98) == 0 and bytes(s.e.dma_buf) == bytes(range(256)) * 16


def test_dma_with_msi() -> None:
    s = DmaSetup()
    vec, hits = msi_counter(s.m)
    s.e.msi_set_enabled("msi", 1)
    s.e.msi_program(0, vec.address, vec.data)
    s.start(0x40000, s.iova, 8, 0x1 | 0x2 | 0x4)
    s.m.clock.run_until_idle()
    assert hits == [1] and s.seen == []


@pytest.mark.parametrize("direction", [0, 2])
def test_dma_fault_moves_nothing_and_raises_nothing(direction: int) -> None:
    s = DmaSetup()
    s.e.dma_buf[:16] = b"X" * 16
    ram = s.iova + 0x1000 - 8  # runs past the mapped page
    if direction:
        s.start(0x40000, ram, 16, 0x1 | direction | 0x4)
    else:
        s.start(ram, 0x40000, 16, 0x1 | 0x4)
    s.m.clock.run_until_idle()
    assert rd(s.e, 0x98) & 1 == 0 and rd(s.e, 0x24) == 0 and s.seen == []
    assert s.buf[:] == b"\xee" * (3 * 4096)
    assert bytes(s.e.dma_buf[:16]) == b"X" * 16
    rec = s.m.faults[-1]
    assert (rec.iova, rec.length) == (ram, 16)
    assert rec.direction == ("write" if direction else "read")


def test_dma_without_bus_master() -> None:
    s = DmaSetup()
    s.e.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY)
    s.e.dma_buf[:4] = b"keep"
    s.buf[4096:4100] = b"data"
    s.start(s.iova, 0x40000, 4, 0x1 | 0x4)
    s.m.clock.run_until_idle()
    assert bytes(s.e.dma_buf[:4]) == b"keep" and s.seen == [] and rd(s.e, 0x98) == 0x4
    s.start(0x40000, s.iova, 4, 0x1 | 0x2 | 0x4)
    s.m.clock.run_until_idle()
    assert s.buf[4096:4100] == b"data" and s.seen == []
    assert sum("bus mastering disabled" in ev for ev in s.m.events) == 2


@pytest.mark.parametrize("dst,count", [(0x40000, 4097), (0x3FFFF, 4), (0x40FFD, 4),
                                       (0x40000, (1 << 64) - 0x40000 + 0x10)])  # the last wraps
def test_dma_outside_the_buffer_is_refused(dst: int, count: int) -> None:
    s = DmaSetup()
    s.start(s.iova, dst, count, 0x1 | 0x4)
    s.m.clock.run_until_idle()
    assert rd(s.e, 0x98) == 0x4 and s.seen == [] and s.m.faults == []
    assert any("out of bounds" in ev for ev in s.m.events)
    assert bytes(s.e.dma_buf) == bytes(4096)


def test_dma_address_clamping() -> None:
    s = DmaSetup()
    s.buf[4096:4100] = b"clmp"
    s.start(s.iova | (1 << 28), 0x40000, 4, 0x1)  # above the 28-bit mask
    s.m.clock.run_until_idle()
    assert bytes(s.e.dma_buf[:4]) == b"clmp"
    assert any("clamping" in ev for ev in s.m.events)


def test_dma_mask_option() -> None:
    s = DmaSetup(edu_dma_mask_bits=32)
    s.start(s.iova | (1 << 28), 0x40000, 4, 0x1)  # not clamped: unmapped -> fault
    s.m.clock.run_until_idle()
    assert s.m.faults and s.m.faults[-1].iova == s.iova | (1 << 28)
    assert not any("clamping" in ev for ev in s.m.events)


# -- reset -----------------------------------------------------------------------------------


def test_reset_returns_power_on_state_and_keeps_the_buffer() -> None:
    s = DmaSetup()
    e, m = s.e, s.m
    wr(e, 0x04, 1)
    wr(e, 0x20, 0x80)
    wr(e, 0x60, 0x100)
    e.dma_buf[:4] = b"kept"
    wr(e, 0x08, 4)  # factorial running
    s.start(s.iova, 0x40010, 4, 0x1 | 0x4)  # DMA running
    e.cfg_write(0x60, 4, 0xDEAD)
    assert s.seen == [True]
    e.reset()
    assert s.seen == [True, False]
    e.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY)
    assert [rd(e, o) for o in (0x04, 0x08, 0x20, 0x24, 0x98)] == [0, 0, 0, 0, 0]
    assert [rd(e, o, 8) for o in (0x80, 0x88, 0x90)] == [0, 0, 0]
    assert e.cfg_read(0x60, 4) == 0 and e.cfg_read(R.PCI_BASE_ADDRESS_0, 4) == 0xFE00_0000
    m.clock.run_until_idle()  # cancelled work does not complete
    assert rd(e, 0x08) == 0 and rd(e, 0x24) == 0 and s.seen == [True, False]
    assert bytes(e.dma_buf[:4]) == b"kept"
