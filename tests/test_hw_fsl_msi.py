"""Freescale MSI controller: encodings, allocation order, receive path.  SPEC §8."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import pytest

from vfiosim.hw import fsl_msi as M
from vfiosim.hw.fsl_msi import FslMsi, MsiVector
from vfiosim.hw.irq import IrqDomain

CCSR = 0xF_FE00_0000


class FakeBus:
    """Just enough of PhysBus: add_mmio and a 4-byte write dispatch."""

    def __init__(self) -> None:
        self.regions: list[tuple[int, int, Any]] = []

    def add_mmio(self, base: int, size: int, region: Any) -> None:
        for b, s, _ in self.regions:
            assert base + size <= b or b + s <= base, "overlapping MMIO"
        self.regions.append((base, size, region))

    def _find(self, phys: int) -> tuple[int, Any]:
        for b, s, r in self.regions:
            if b <= phys < b + s:
                return b, r
        raise AssertionError(f"unbacked {phys:#x}")

    def write(self, phys: int, data: bytes) -> None:
        base, r = self._find(phys)
        r.mmio_write(phys - base, len(data), int.from_bytes(data, "little"))

    def read32(self, phys: int) -> int:
        base, r = self._find(phys)
        return r.mmio_read(phys - base, 4)


def p4080() -> FslMsi:
    return FslMsi(msi_type="msiir", banks=3, ccsr_base=CCSR)


def t4240() -> FslMsi:
    return FslMsi(msi_type="msiir1", banks=4, ccsr_base=CCSR)


# --------------------------------------------------------------------------------------------
# Encodings and addresses


@pytest.mark.parametrize(
    ("reg", "bit", "hwirq"),
    [(0, 0, 0), (0, 1, 1), (0, 31, 31), (1, 0, 32), (3, 5, 101), (7, 31, 255)],
)
def test_msiir_encoding(reg: int, bit: int, hwirq: int) -> None:
    t = M.MSI_TYPES["msiir"]
    assert M.msi_to_hwirq(t, reg, bit) == hwirq
    assert M.hwirq_to_msi(t, hwirq) == (reg, bit)
    assert M.decode_message(t, hwirq) == (reg, bit)


@pytest.mark.parametrize(
    ("reg", "bit", "hwirq"),
    [(0, 0, 0), (1, 0, 1), (15, 0, 15), (0, 1, 16), (3, 2, 0x23), (15, 31, 511)],
)
def test_msiir1_encoding(reg: int, bit: int, hwirq: int) -> None:
    t = M.MSI_TYPES["msiir1"]
    assert M.msi_to_hwirq(t, reg, bit) == hwirq
    assert M.hwirq_to_msi(t, hwirq) == (reg, bit)
    assert M.decode_message(t, hwirq) == (reg, bit)


def test_higher_data_bits_are_ignored() -> None:
    assert M.decode_message(M.MSI_TYPES["msiir"], 0xFFFF_FF00 | 0x25) == (1, 5)
    assert M.decode_message(M.MSI_TYPES["msiir1"], 0xFFFF_FE00 | 0x1F3) == (3, 31)


def test_bank_geometry() -> None:
    assert [b.type.hwirqs for b in p4080().banks] == [256] * 3
    assert [b.type.hwirqs for b in t4240().banks] == [512] * 4


def test_p4080_addresses_and_regions() -> None:
    m = p4080()
    assert m.bank_count() == m.region_count() == 3
    assert [b.msiir_addr for b in m.banks] == [0xF_FE04_4140, 0xF_FE04_5140, 0xF_FE04_6140]
    assert [b.block_base for b in m.banks] == [0xF_FE04_1600, 0xF_FE04_1800, 0xF_FE04_1A00]
    assert m.get_region(0) == (0xF_FE04_4140, 0x1000)
    assert m.get_region(2) == (0xF_FE04_6140, 0x1000)
    assert m.get_region(3) is None
    assert m.get_region(-1) is None


def test_t4240_addresses_and_regions() -> None:
    m = t4240()
    assert m.region_count() == 4
    assert [m.get_region(i) for i in range(4)] == [
        (0xF_FE04_4148, 0x1000), (0xF_FE04_5148, 0x1000), (0xF_FE04_6148, 0x1000),
        (0xF_FE04_7148, 0x1000)]
    assert m.banks[3].block_base == 0xF_FE04_1C00
    assert m.get_region(4) is None
    assert m.bank_of_address(0xF_FE04_6148) == 2
    assert m.bank_of_address(0xF_FE04_6140) is None


def test_attach_registers_every_page() -> None:
    bus = FakeBus()
    m = t4240()
    m.attach(bus)
    assert sorted((b, s) for b, s, _ in bus.regions) == sorted(
        [(CCSR + 0x41600 + 0x200 * i, 0x200) for i in range(4)]
        + [(CCSR + 0x44000 + 0x1000 * i, 0x1000) for i in range(4)])


# --------------------------------------------------------------------------------------------
# Allocation (SPEC §8.3)


def test_allocation_fills_bank_0_first() -> None:
    m = p4080()
    vecs = [m.alloc() for _ in range(257)]
    assert all(v is not None for v in vecs)
    assert [(v.bank, v.hwirq) for v in vecs[:256]] == [(0, i) for i in range(256)]  # type: ignore[union-attr]
    last = vecs[256]
    assert last is not None and (last.bank, last.hwirq, last.data) == (1, 0, 0)
    assert last.address == 0xF_FE04_5140
    assert vecs[37] is not None and vecs[37].data == 37
    assert len({v.irq for v in vecs if v is not None}) == 257


def test_msiir1_vector_fields() -> None:
    m = t4240()
    vecs = [m.alloc() for _ in range(18)]
    v = vecs[17]
    assert v is not None
    assert (v.bank, v.hwirq, v.data, v.address) == (0, 17, 17, 0xF_FE04_4148)
    assert M.hwirq_to_msi(m.type, 17) == (1, 1)  # MSIR 1, bit 1
    assert isinstance(v, MsiVector)


def test_exhaustion_returns_none() -> None:
    m = FslMsi(msi_type="msiir", banks=2)
    assert all(m.alloc() is not None for _ in range(512))
    assert m.alloc() is None
    assert m.dump()["banks"][1]["free"] == 0


def test_free_and_realloc_reuses_lowest() -> None:
    m = p4080()
    vecs = [m.alloc() for _ in range(300)]
    assert vecs[5] is not None and vecs[260] is not None
    m.free(vecs[260])  # bank 1 hwirq 4
    m.free(vecs[5])  # bank 0 hwirq 5
    again = m.alloc()
    assert again is not None and (again.bank, again.hwirq) == (0, 5)
    again = m.alloc()
    assert again is not None and (again.bank, again.hwirq) == (1, 4)
    again = m.alloc()
    assert again is not None and (again.bank, again.hwirq) == (1, 44)


def test_double_free_is_logged() -> None:
    m = p4080()
    v = m.alloc()
    assert v is not None
    m.free(v)
    m.free(v)
    assert any("free of unallocated" in e for e in m.events)
    w = m.alloc()
    assert w is not None and w.hwirq == 0


# --------------------------------------------------------------------------------------------
# Receive path (SPEC §8.4)


@pytest.mark.parametrize("factory", [p4080, t4240])
def test_message_write_fires_handler_once_and_clears_msir(factory: Any) -> None:
    bus = FakeBus()
    m = factory()
    m.attach(bus)
    vecs = [m.alloc() for _ in range(40)]
    v = vecs[37]
    assert v is not None
    hits: list[int] = []
    m.set_handler(v, lambda: hits.append(v.hwirq))
    bus.write(v.address, struct.pack("<I", v.data))
    assert hits == [37]
    assert m.banks[0].msir == [0] * m.type.nr_msi_reg
    reg, _bit = M.hwirq_to_msi(m.type, 37)
    assert m.banks[0].cascade_count[reg] == 1
    assert m.dump()["banks"][0]["delivered"] == {37: 1}
    assert m.spurious == 0


def test_second_bank_delivery() -> None:
    bus = FakeBus()
    m = t4240()
    m.attach(bus)
    for _ in range(512):
        m.alloc()
    v = m.alloc()
    assert v is not None and v.bank == 1
    hits: list[str] = []
    m.set_handler(v, lambda: hits.append("b1"))
    bus.write(0xF_FE04_5148, struct.pack("<I", v.data))
    assert hits == ["b1"]
    # the same data written to bank 0's register is a different (handler-less) hwirq there
    bus.write(0xF_FE04_4148, struct.pack("<I", v.data))
    assert hits == ["b1"] and m.spurious == 1


def test_masked_cascade_shows_msir_bits_and_read_clears() -> None:
    bus = FakeBus()
    m = p4080()
    m.attach(bus)
    vecs = [m.alloc() for _ in range(40)]
    hits: list[int] = []
    for i in (33, 35):
        vi = vecs[i]
        assert vi is not None
        m.set_handler(vi, lambda i=i: hits.append(i))
    bank = m.banks[0]
    bank.set_cascade_masked(1, True)
    bus.write(0xF_FE04_4140, struct.pack("<I", 35))
    bus.write(0xF_FE04_4140, struct.pack("<I", 33))
    assert hits == []
    # MSIR1 at block + 0x10 holds bits 1 and 3; reading it acknowledges (clears) them
    assert bus.read32(0xF_FE04_1610) == 0b1010
    assert bus.read32(0xF_FE04_1610) == 0
    bus.write(0xF_FE04_4140, struct.pack("<I", 35))
    bus.write(0xF_FE04_4140, struct.pack("<I", 33))
    bank.set_cascade_masked(1, False)
    assert hits == [33, 35]  # one cascade, lowest bit first
    assert bank.msir[1] == 0


def test_in_block_msiir_on_mpic() -> None:
    bus = FakeBus()
    m = p4080()
    m.attach(bus)
    v = m.alloc()
    assert v is not None
    hits: list[int] = []
    m.set_handler(v, lambda: hits.append(1))
    bus.write(0xF_FE04_1600 + 0x140, struct.pack("<I", v.data))
    assert hits == [1]


def test_spurious_hwirq_is_counted_and_logged() -> None:
    bus = FakeBus()
    m = p4080()
    m.attach(bus)
    bus.write(0xF_FE04_4140, struct.pack("<I", 7))  # hwirq 7 never allocated
    assert m.spurious == 1
    assert any("spurious hwirq 0x7" in e for e in m.events)
    v = m.alloc()
    assert v is not None
    bus.write(v.address, struct.pack("<I", v.data))  # allocated, no handler yet
    assert m.spurious == 2
    m.set_handler(v, None)
    bus.write(v.address, struct.pack("<I", v.data))
    assert m.spurious == 3


def test_other_writes_are_ignored_and_logged() -> None:
    bus = FakeBus()
    m = t4240()
    m.attach(bus)
    v = m.alloc()
    assert v is not None
    hits: list[int] = []
    m.set_handler(v, lambda: hits.append(1))
    bus.write(0xF_FE04_4140, struct.pack("<I", 0))  # MSIIR offset on an MSIIR1 bank
    bus.write(0xF_FE04_4148, struct.pack("<H", 0))  # 2-byte write
    assert hits == [] and m.spurious == 0
    assert sum("ignored" in e for e in m.events) == 2
    assert bus.read32(0xF_FE04_4148) == 0  # the message register is write-only


def test_set_handler_on_freed_vector_raises() -> None:
    m = p4080()
    v = m.alloc()
    assert v is not None
    m.free(v)
    with pytest.raises(KeyError):
        m.set_handler(v, lambda: None)


def test_with_machine_irq_domain() -> None:
    events: list[str] = []
    machine = SimpleNamespace(
        msi_config={"type": "msiir1", "banks": 4, "ccsr_base": CCSR},
        log=events.append,
        bus=FakeBus(),
    )
    machine.irq = IrqDomain(machine)
    m = FslMsi.from_machine(machine)  # type: ignore[arg-type]
    assert len(machine.bus.regions) == 8
    v = m.alloc()
    assert v is not None and machine.irq.allocated(v.irq)
    counter = SimpleNamespace(n=0)

    def signal() -> None:
        counter.n += 1

    m.set_handler(v, signal)
    machine.bus.write(v.address, struct.pack("<I", v.data))
    machine.bus.write(v.address, struct.pack("<I", v.data))
    assert counter.n == 2 and machine.irq.fired[v.irq] == 2
    m.free(v)
    assert not machine.irq.allocated(v.irq)
    machine.bus.write(v.address, struct.pack("<I", v.data))
    assert m.spurious == 1 and any("spurious" in e for e in events)


def test_dump() -> None:
    m = p4080()
    v = m.alloc()
    assert v is not None
    d = m.dump()
    assert (d["type"], d["srs_shift"], d["ibs_shift"]) == ("msiir", 5, 0)
    b0 = d["banks"][0]
    assert b0["allocated"] == [0] and b0["free"] == 255 and b0["msiir"] == 0xF_FE04_4140
    assert b0["irqs"] == {0: v.irq}
