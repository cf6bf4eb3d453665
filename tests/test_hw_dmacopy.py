"""hw/dmacopy.py against docs/dmacopy.md."""

from __future__ import annotations

import struct

from hw_helpers import Buffer, CountingMemory, make_machine, msi_counter

from vfiosim.hw.dmacopy import (
    DMAC_CTRL_ENABLE,
    DMAC_CTRL_ERR_IRQ_EN,
    DMAC_CTRL_RESET,
    DMAC_DESC_DONE,
    DMAC_DESC_ERROR,
    DMAC_DESC_F_INT,
    DMAC_ERR_DST,
    DMAC_ERR_FETCH,
    DMAC_ERR_FLAGS,
    DMAC_ERR_LEN,
    DMAC_ERR_RING,
    DMAC_ERR_SRC,
    DMAC_REG_COMPL_LO,
    DMAC_REG_COMPLETED,
    DMAC_REG_CTRL,
    DMAC_REG_ERR_DESC,
    DMAC_REG_ERR_VECTOR,
    DMAC_REG_HEAD,
    DMAC_REG_ID,
    DMAC_REG_RING_HI,
    DMAC_REG_RING_LO,
    DMAC_REG_RING_SIZE,
    DMAC_REG_STATUS,
    DMAC_REG_TAIL,
    DMAC_REG_VERSION,
    DMAC_STATUS_BUSY,
    DMAC_STATUS_ERR,
    DMAC_STATUS_HALTED,
    DMACOPY_ID,
    DmaCopy,
    pack_descriptor,
)
from vfiosim.uapi import pci_regs as R

MIB = 1 << 20
RING_IOVA = 0x1000_0000
COMPL_IOVA = 0x1100_0000
SRC_IOVA = 0x2000_0000
DST_IOVA = 0x4000_0000


class Rig:
    """A dmacopy with a 16-entry ring, a completion record and two data buffers mapped."""

    def __init__(self, size: int = MIB, entries: int = 16, **options) -> None:  # noqa: ANN003
        self.m = m = make_machine(**options)
        self.d = d = DmaCopy(m, "0000:02:00.0", 0x200, bar0=0xFD00_0000)
        d.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER)
        self.mm = mm = CountingMemory()
        self.ring = Buffer(4096)
        self.compl = Buffer(4096)
        self.src = Buffer(size)
        self.dst = Buffer(size, fill=0xEE)
        m.iommu.map(RING_IOVA, m.bus.pin(mm, self.ring.addr, 4096))
        m.iommu.map(COMPL_IOVA, m.bus.pin(mm, self.compl.addr, 4096))
        m.iommu.map(SRC_IOVA, m.bus.pin(mm, self.src.addr, size), write=False)
        m.iommu.map(DST_IOVA, m.bus.pin(mm, self.dst.addr, size))
        self.entries = entries
        self.vecs = [msi_counter(m) for _ in range(8)]
        d.msi_set_enabled("msix", 8)
        for i, (vec, _) in enumerate(self.vecs):
            d.msi_program(i, vec.address, vec.data)
        self.w(DMAC_REG_RING_LO, RING_IOVA)
        self.w(DMAC_REG_RING_HI, 0)
        self.w(DMAC_REG_RING_SIZE, entries)
        self.w(DMAC_REG_COMPL_LO, COMPL_IOVA)
        self.w(DMAC_REG_CTRL, DMAC_CTRL_ENABLE)
        self.tail = 0

    def w(self, off: int, value: int, size: int = 4) -> None:
        self.d.bar_write(0, off, size, value)

    def r(self, off: int, size: int = 4) -> int:
        return self.d.bar_read(0, off, size)

    def post(self, src: int, dst: int, length: int, flags: int = 0, vector: int = 0) -> int:
        i = self.tail
        self.ring[32 * i : 32 * i + 32] = pack_descriptor(src, dst, length, flags, vector)
        self.tail = (self.tail + 1) % self.entries
        return i

    def doorbell(self) -> None:
        self.w(DMAC_REG_TAIL, self.tail)

    def status(self, i: int) -> tuple[int, int]:
        return struct.unpack_from("<II", self.ring.map, 32 * i + 0x18)

    def hits(self, v: int) -> int:
        return len(self.vecs[v][1])


def test_identity_and_capabilities() -> None:
    r = Rig(size=4096)
    d = r.d
    assert d.is_pcie and d.cfg_size == 4096
    assert d.cfg_read(R.PCI_VENDOR_ID, 4) == 0xDC01_1234
    assert d.cfg_read(R.PCI_CLASS_DEVICE, 2) == 0x0801
    assert d.find_cap(R.PCI_CAP_ID_EXP) == 0x40
    assert d.find_cap(R.PCI_CAP_ID_PM) == 0x80
    assert d.find_cap(R.PCI_CAP_ID_MSIX) == 0x90
    assert d.find_cap(R.PCI_CAP_ID_MSI) == 0
    assert (d.msix_vectors, d.msix_bar, d.msix_table_offset, d.msix_pba_offset) == (
        8, 0, 0x2000, 0x3000)
    assert d.cfg_read(R.PCI_INTERRUPT_PIN, 1) == 0
    assert d.cfg_read(R.PCI_BASE_ADDRESS_0, 4) == 0xFD00_0000
    assert r.r(DMAC_REG_ID) == DMACOPY_ID and r.r(DMAC_REG_VERSION) == 0x0001_0000
    assert r.r(DMAC_REG_RING_LO, 8) == RING_IOVA  # 8-byte access: both halves
    assert r.r(0x100) == 0  # reserved
    assert r.r(DMAC_REG_ID, 2) == 0xFFFF  # 2-byte access not supported


def test_one_mib_copy_fires_its_vector() -> None:
    r = Rig()
    r.src[:] = bytes(range(256)) * (MIB // 256)
    i = r.post(SRC_IOVA, DST_IOVA, MIB, DMAC_DESC_F_INT, vector=5)
    r.doorbell()
    assert r.r(DMAC_REG_STATUS) & DMAC_STATUS_BUSY
    assert r.r(DMAC_REG_HEAD) == 0 and r.dst[:4] == b"\xee" * 4  # nothing until time runs
    copies = r.mm.copies
    r.m.clock.run_until_idle()
    assert r.dst[:] == r.src[:]
    assert r.mm.copies == copies + 1  # one memmove for the whole MiB
    assert r.status(i) == (DMAC_DESC_DONE, MIB)
    assert [r.hits(v) for v in range(8)] == [0, 0, 0, 0, 0, 1, 0, 0]
    assert r.r(DMAC_REG_HEAD) == 1 and r.r(DMAC_REG_COMPLETED) == 1
    assert struct.unpack("<II", r.compl[:8]) == (1, 1)
    assert r.r(DMAC_REG_STATUS) == 0 and r.m.faults == []


def test_batch_wraps_around_the_ring_and_vectors_per_descriptor() -> None:
    r = Rig(size=64 * 1024, entries=4)
    r.src[:] = bytes(range(256)) * 256
    for round_ in range(3):
        for k in range(3):  # 3 of 4 slots: the ring is full
            off = (round_ * 3 + k) * 1024
            r.post(SRC_IOVA + off, DST_IOVA + off, 1024, DMAC_DESC_F_INT, vector=k)
        r.doorbell()
        r.m.clock.run_until_idle()
    assert r.dst[: 9 * 1024] == r.src[: 9 * 1024] and r.dst[9 * 1024 : 9 * 1024 + 1] == b"\xee"
    assert [r.hits(v) for v in range(3)] == [3, 3, 3]
    assert r.r(DMAC_REG_COMPLETED) == 9 and r.r(DMAC_REG_HEAD) == 9 % 4


def test_source_fault_aborts_the_descriptor_only() -> None:
    r = Rig(size=8192)
    r.src[:] = b"S" * 8192
    bad = r.post(0x7000_0000, DST_IOVA, 4096, DMAC_DESC_F_INT, vector=1)  # unmapped source
    good = r.post(SRC_IOVA, DST_IOVA + 4096, 4096, DMAC_DESC_F_INT, vector=2)
    r.doorbell()
    r.m.clock.run_until_idle()
    assert r.status(bad) == (DMAC_DESC_ERROR | DMAC_ERR_SRC, 0)
    assert r.dst[:4096] == b"\xee" * 4096  # nothing moved for it
    assert r.status(good) == (DMAC_DESC_DONE, 4096) and r.dst[4096:] == b"S" * 4096
    assert r.hits(1) == 1 and r.hits(2) == 1  # the status tells the driver what happened
    rec = r.m.faults[-1]
    assert (rec.iova, rec.direction, rec.device, rec.rid) == (0x7000_0000, "read",
                                                              "0000:02:00.0", 0x200)


def test_destination_fault_moves_nothing() -> None:
    r = Rig(size=8192)
    r.src[:] = b"S" * 8192
    # runs past the end of the mapped destination: the first 4 KiB must not be written
    i = r.post(SRC_IOVA, DST_IOVA + 4096, 8192)
    j = r.post(SRC_IOVA, SRC_IOVA + 4096, 16)  # destination mapped read-only
    r.doorbell()
    r.m.clock.run_until_idle()
    assert r.status(i) == (DMAC_DESC_ERROR | DMAC_ERR_DST, 0)
    assert r.status(j) == (DMAC_DESC_ERROR | DMAC_ERR_DST, 0)
    assert r.dst[:] == b"\xee" * 8192
    assert [f.reason for f in r.m.faults] == ["not mapped", "permission"]


def test_bad_length_and_flags() -> None:
    r = Rig(size=4096)
    a = r.post(SRC_IOVA, DST_IOVA, 0)
    b = r.post(SRC_IOVA, DST_IOVA, (16 << 20) + 1)
    c = r.post(SRC_IOVA, DST_IOVA, 16, flags=0x8)
    d = r.post(SRC_IOVA, DST_IOVA, 16, DMAC_DESC_F_INT, vector=8)
    r.doorbell()
    r.m.clock.run_until_idle()
    assert r.status(a)[0] == DMAC_DESC_ERROR | DMAC_ERR_LEN
    assert r.status(b)[0] == DMAC_DESC_ERROR | DMAC_ERR_LEN
    assert r.status(c)[0] == DMAC_DESC_ERROR | DMAC_ERR_FLAGS
    assert r.status(d)[0] == DMAC_DESC_ERROR | DMAC_ERR_FLAGS
    assert r.dst[:] == b"\xee" * 4096 and r.m.faults == []
    assert sum(r.hits(v) for v in range(8)) == 0


def test_descriptor_fetch_fault_halts_and_raises_error_vector() -> None:
    r = Rig(size=4096)
    r.w(DMAC_REG_CTRL, 0)
    r.w(DMAC_REG_RING_LO, 0x5000_0000)  # unmapped ring
    r.w(DMAC_REG_ERR_VECTOR, 7)
    r.w(DMAC_REG_CTRL, DMAC_CTRL_ENABLE | DMAC_CTRL_ERR_IRQ_EN)
    r.post(SRC_IOVA, DST_IOVA, 16)
    r.doorbell()
    r.m.clock.run_until_idle()
    st = r.r(DMAC_REG_STATUS)
    assert st & DMAC_STATUS_HALTED and st & DMAC_STATUS_ERR and st >> 8 == DMAC_ERR_FETCH
    assert r.hits(7) == 1 and r.r(DMAC_REG_ERR_DESC) == 0 and r.r(DMAC_REG_HEAD) == 0
    r.doorbell()  # halted: a doorbell does nothing
    r.m.clock.run_until_idle()
    assert r.r(DMAC_REG_HEAD) == 0
    # fix the ring, clear the error, ring again: the same descriptor runs
    r.w(DMAC_REG_CTRL, 0)
    r.w(DMAC_REG_RING_LO, RING_IOVA)
    r.w(DMAC_REG_CTRL, DMAC_CTRL_ENABLE)
    r.w(DMAC_REG_STATUS, DMAC_STATUS_ERR)
    assert r.r(DMAC_REG_STATUS) == 0
    r.doorbell()
    r.m.clock.run_until_idle()
    assert r.status(0)[0] == DMAC_DESC_DONE and r.r(DMAC_REG_HEAD) == 1


def test_bad_ring_size_halts() -> None:
    r = Rig(size=4096)
    r.w(DMAC_REG_CTRL, 0)
    r.w(DMAC_REG_RING_SIZE, 3)
    r.w(DMAC_REG_CTRL, DMAC_CTRL_ENABLE)
    r.w(DMAC_REG_TAIL, 1)
    r.m.clock.run_until_idle()
    assert r.r(DMAC_REG_STATUS) >> 8 == DMAC_ERR_RING


def test_ring_registers_locked_while_enabled() -> None:
    r = Rig(size=4096)
    r.w(DMAC_REG_RING_LO, 0x1234_5000)
    r.w(DMAC_REG_RING_SIZE, 2)
    assert r.r(DMAC_REG_RING_LO) == RING_IOVA and r.r(DMAC_REG_RING_SIZE) == 16


def test_bus_master_off_halts_on_fetch() -> None:
    r = Rig(size=4096)
    r.d.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY)
    r.post(SRC_IOVA, DST_IOVA, 16, DMAC_DESC_F_INT)
    r.doorbell()
    r.m.clock.run_until_idle()
    assert r.r(DMAC_REG_STATUS) >> 8 == DMAC_ERR_FETCH
    assert r.dst[:16] == b"\xee" * 16 and r.hits(0) == 0


def test_delay_option_and_disable_cancels() -> None:
    r = Rig(size=4096, dmacopy_delay_us=50.0)
    r.post(SRC_IOVA, DST_IOVA, 16)
    r.doorbell()
    r.m.clock.advance(49_999)
    assert r.r(DMAC_REG_HEAD) == 0
    r.m.clock.advance(1)
    assert r.r(DMAC_REG_HEAD) == 1
    r.post(SRC_IOVA, DST_IOVA, 16)
    r.doorbell()
    r.w(DMAC_REG_CTRL, 0)  # disabled before the engine ran
    r.m.clock.run_until_idle()
    assert r.r(DMAC_REG_HEAD) == 1
    r.w(DMAC_REG_CTRL, DMAC_CTRL_ENABLE)  # enabling picks the pending work up
    r.m.clock.run_until_idle()
    assert r.r(DMAC_REG_HEAD) == 2


def test_ctrl_reset_and_function_reset() -> None:
    r = Rig(size=4096)
    r.post(SRC_IOVA, DST_IOVA, 16)
    r.doorbell()
    r.w(DMAC_REG_CTRL, DMAC_CTRL_RESET)
    r.m.clock.run_until_idle()
    assert r.dst[:16] == b"\xee" * 16
    assert [r.r(o) for o in (DMAC_REG_CTRL, DMAC_REG_RING_LO, DMAC_REG_RING_SIZE,
                             DMAC_REG_TAIL, DMAC_REG_HEAD)] == [0, 0, 0, 0, 0]
    assert r.d.msi_kind == "msix"  # an engine reset keeps the PCI state
    r.d.reset()
    assert r.d.msi_kind is None and not r.d.bus_master
