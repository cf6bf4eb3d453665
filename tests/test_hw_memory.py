"""hw/memory.py: pinning, alignment, RAM access through real user memory, MMIO, unbacked
addresses (SPEC §10)."""

from __future__ import annotations

import pytest
from hw_helpers import Buffer, CountingMemory, make_machine

from vfiosim.hw.memory import ExtentAllocator, PhysBus, next_pow2
from vfiosim.kernel.uaccess import LocalMemory

PAGE = 4096
HUGE = 2 << 20


def test_pin_gives_one_aligned_range_per_page() -> None:
    m = make_machine()
    buf = Buffer(4 * PAGE)
    ranges = m.bus.pin(LocalMemory(), buf.addr, 4 * PAGE)
    assert len(ranges) == 4
    assert all(n == PAGE and p % PAGE == 0 for p, n in ranges)
    assert all(m.bus.dram_base <= p < m.bus.dram_base + m.bus.dram_size for p, _ in ranges)
    assert len({p for p, _ in ranges}) == 4
    for i, (p, _) in enumerate(ranges):
        assert m.bus.lookup(p + 5)[1] == buf.addr + i * PAGE + 5


def test_pin_unaligned_start_and_end() -> None:
    m = make_machine()
    mm = LocalMemory()
    buf = Buffer(3 * PAGE)
    ranges = m.bus.pin(mm, buf.addr + 100, 2 * PAGE)
    assert [n for _, n in ranges] == [PAGE - 100, PAGE, 100]
    assert ranges[0][0] % PAGE == 100
    assert m.bus.lookup(ranges[0][0]) == (mm, buf.addr + 100)


def test_hugepage_frames_are_aligned_to_the_page_size() -> None:
    m = make_machine()
    mm = LocalMemory()
    m.bus.pin(mm, 0x7000_0000_1000, PAGE)  # perturb the allocator first
    vaddr = 0x7F00_0020_0000  # a 2 MiB page (the pin does not touch memory)
    ranges = m.bus.pin(mm, vaddr + 0x10_0000, 0x10_0000, page_size=HUGE)
    assert len(ranges) == 1
    phys, n = ranges[0]
    assert n == 0x10_0000
    assert (phys - 0x10_0000) % HUGE == 0  # the 2 MiB frame is 2 MiB aligned
    two = m.bus.pin(mm, vaddr, 2 * HUGE, page_size=HUGE)
    assert [n for _, n in two] == [HUGE, HUGE] and all(p % HUGE == 0 for p, _ in two)


@pytest.mark.parametrize("size", [PAGE, 3 * PAGE, 0x10_0000, 0x30_0000])
def test_contiguous_pool_alignment(size: int) -> None:
    m = make_machine()
    mm = LocalMemory()
    m.bus.pin(mm, 0x1000, PAGE, contiguous=True)  # perturb
    ranges = m.bus.pin(mm, 0x7F00_0000_0000, size, contiguous=True)
    assert len(ranges) == 1
    phys, n = ranges[0]
    assert n == size
    assert phys % next_pow2(size) == 0
    assert m.bus.pool_base <= phys < m.bus.pool_base + m.bus.pool_size


def test_unpin_releases_frames() -> None:
    m = make_machine()
    mm = LocalMemory()
    free0 = m.bus._general.free_bytes()
    r1 = m.bus.pin(mm, 0x10000, 8 * PAGE)
    r2 = m.bus.pin(mm, 0x90000, 2 * PAGE, contiguous=True)
    assert m.bus.pinned_bytes() == 10 * PAGE
    m.bus.unpin(r1[2:5])  # a piece in the middle
    assert m.bus.pinned_bytes() == 7 * PAGE
    assert m.bus.lookup(r1[2][0]) is None and m.bus.lookup(r1[5][0]) is not None
    m.bus.unpin(r1[:2] + r1[5:] + r2)
    assert m.bus.pinned_bytes() == 0
    assert m.bus._general.free_bytes() == free0
    m.bus.unpin(r2)  # not pinned any more: logged, no exception
    assert any("not pinned" in e for e in m.events)


def test_pinning_the_same_page_twice_gives_two_frames_reaching_one_memory() -> None:
    m = make_machine()
    mm = LocalMemory()
    buf = Buffer(PAGE)
    (a, _), = m.bus.pin(mm, buf.addr, PAGE)
    (b, _), = m.bus.pin(mm, buf.addr, PAGE)
    assert a != b
    m.bus.write(a, b"shared")
    assert m.bus.read(b, 6) == b"shared"


def test_ram_round_trip_moves_the_real_bytes() -> None:
    m = make_machine()
    buf = Buffer(4 * PAGE, fill=0xAA)
    ranges = m.bus.pin(LocalMemory(), buf.addr, 4 * PAGE)
    phys = ranges[1][0] + 10
    m.bus.write(phys, b"hello, device")
    assert buf[PAGE + 10 : PAGE + 23] == b"hello, device"
    assert buf[PAGE + 9 : PAGE + 10] == b"\xaa" and buf[PAGE + 23 : PAGE + 24] == b"\xaa"
    buf[3 * PAGE : 3 * PAGE + 4] = b"\x01\x02\x03\x04"
    assert m.bus.read(ranges[3][0], 4) == b"\x01\x02\x03\x04"


def test_access_spanning_frames_of_one_pin() -> None:
    m = make_machine()
    buf = Buffer(2 * PAGE)
    ranges = m.bus.pin(LocalMemory(), buf.addr, 2 * PAGE)
    assert ranges[1][0] == ranges[0][0] + PAGE  # one free extent: consecutive frames
    m.bus.write(ranges[0][0] + PAGE - 2, b"abcd")
    assert buf[PAGE - 2 : PAGE + 2] == b"abcd"


def test_copy_is_one_memmove_for_virtually_contiguous_frames() -> None:
    m = make_machine()
    mm = CountingMemory()
    size = 1 << 20
    src, dst = Buffer(size), Buffer(size)
    src[:] = bytes(range(256)) * (size // 256)
    # pin page by page: separate runs that are physically and virtually contiguous
    s = [r for i in range(size // PAGE) for r in m.bus.pin(mm, src.addr + i * PAGE, PAGE)]
    d = m.bus.pin(mm, dst.addr, size)
    assert len(s) == size // PAGE
    m.bus.copy(d[0][0], s[0][0], size)
    assert mm.copies == 1
    assert dst[:] == src[:]


def test_copy_across_scattered_frames() -> None:
    m = make_machine()
    mm = CountingMemory()
    src, dst = Buffer(4 * PAGE), Buffer(4 * PAGE)
    src[:] = b"".join(bytes([i]) * PAGE for i in range(4))
    # pinned last page first: physically ascending frames back src pages 3, 2, 1, 0
    s = [m.bus.pin(mm, src.addr + i * PAGE, PAGE)[0] for i in (3, 2, 1, 0)]
    d = m.bus.pin(mm, dst.addr, 4 * PAGE)
    assert [p for p, _ in s] == sorted(p for p, _ in s)
    m.bus.copy(d[0][0], s[0][0], 4 * PAGE)  # four physically consecutive frames
    assert dst[:] == b"".join(bytes([i]) * PAGE for i in (3, 2, 1, 0))
    assert mm.copies == 4


def test_unbacked_read_is_all_ones_and_write_dropped() -> None:
    m = make_machine()
    buf = Buffer(3 * PAGE, fill=0x5A)
    ranges = m.bus.pin(LocalMemory(), buf.addr + PAGE, PAGE)  # the middle page only
    hole = m.bus.dram_base + m.bus.dram_size - PAGE  # never pinned
    assert m.bus.read(hole, 8) == b"\xff" * 8
    m.bus.write(hole, b"\x00" * 8)
    assert m.bus.unbacked_reads == 1 and m.bus.unbacked_writes == 1
    assert any("unbacked" in e and "read" in e for e in m.events)
    assert any("unbacked" in e and "dropped" in e for e in m.events)
    # a write overlapping the end of the pinned page: only the pinned part lands
    m.bus.write(ranges[0][0] + PAGE - 2, b"\x11\x22\x33\x44")
    assert buf[2 * PAGE - 2 : 2 * PAGE] == b"\x11\x22"
    assert buf[2 * PAGE : 3 * PAGE] == b"\x5a" * PAGE  # canary after: untouched
    assert buf[:PAGE] == b"\x5a" * PAGE  # canary before: untouched


def test_copy_from_unbacked_writes_ones() -> None:
    m = make_machine()
    buf = Buffer(PAGE, fill=0)
    (p, _), = m.bus.pin(LocalMemory(), buf.addr, PAGE)
    m.bus.copy(p, 0x10, 16)
    assert buf[:16] == b"\xff" * 16 and buf[16:17] == b"\x00"


class Regs:
    def __init__(self) -> None:
        self.log: list[tuple] = []

    def mmio_read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size))
        return 0x1122334455667788 >> (8 * (8 - size)) if size < 8 else 0x1122334455667788

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size, value))


def test_mmio_dispatch() -> None:
    m = make_machine()
    r = Regs()
    m.bus.add_mmio(0xF000_0000, 0x1000, r)
    m.bus.write(0xF000_0010, (0xDEADBEEF).to_bytes(4, "little"))
    assert r.log[-1] == ("w", 0x10, 4, 0xDEADBEEF)
    assert m.bus.read(0xF000_0020, 8) == (0x1122334455667788).to_bytes(8, "little")
    assert r.log[-1] == ("r", 0x20, 8)
    m.bus.write(0xF000_0001, b"\x01\x02\x03")  # unaligned: 1 + 2 byte pieces
    assert r.log[-2:] == [("w", 1, 1, 1), ("w", 2, 2, 0x0302)]


def test_mmio_overlap_refused() -> None:
    m = make_machine()
    m.bus.add_mmio(0xF000_0000, 0x1000, Regs())
    with pytest.raises(ValueError):
        m.bus.add_mmio(0xF000_0800, 0x1000, Regs())
    with pytest.raises(ValueError):
        m.bus.add_mmio(m.bus.dram_base, 0x1000, Regs())


class LostMemory:
    """A pinned mm whose pages went away."""

    def dma_read(self, addr: int, size: int) -> bytes:
        raise OSError(14, "Bad address")

    def dma_write(self, addr: int, data: bytes) -> None:
        raise OSError(14, "Bad address")

    def copy(self, dst: int, src: int, size: int) -> None:
        raise OSError(14, "Bad address")


def test_lost_user_memory_is_logged_not_raised() -> None:
    m = make_machine()
    (p, _), = m.bus.pin(LostMemory(), 0x1000, PAGE)
    assert m.bus.read(p, 4) == b"\xff" * 4
    m.bus.write(p, b"x")
    m.bus.copy(p + 8, p, 8)
    assert sum("reach no user memory" in e for e in m.events) == 3


def test_memory_config_from_machine() -> None:
    from types import SimpleNamespace

    machine = SimpleNamespace(
        memory_config={"dram_base": 0, "dram_size": 1 << 30, "contiguous_pool_base": 1 << 32,
                       "contiguous_pool_size": 1 << 30},
        log=lambda s: None,
    )
    bus = PhysBus(machine)
    assert (bus.dram_base, bus.dram_size, bus.pool_base) == (0, 1 << 30, 1 << 32)
    with pytest.raises(ValueError):
        PhysBus(machine, pool_base=1 << 29)  # overlaps DRAM
    with pytest.raises(MemoryError):
        bus.pin(LocalMemory(), 0, 2 << 30)


def test_extent_allocator_merges() -> None:
    a = ExtentAllocator(0, 0x10000)
    x = a.alloc(0x1000, 0x1000)
    y = a.alloc(0x1000, 0x1000)
    z = a.alloc(0x2000, 0x2000)
    assert (x, y, z) == (0, 0x1000, 0x2000)
    a.free(y, 0x1000)
    a.free(x, 0x1000)
    a.free(z, 0x2000)
    assert dict(a._free) == {0: 0x10000}
    with pytest.raises(ValueError):
        a.free(0, 0x1000)
