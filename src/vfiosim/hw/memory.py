"""The physical address space: DRAM frames that back pinned user memory, and MMIO ranges.

SPEC §10 (decision D7). Hardware constraints and model choices, before the code:

* DRAM is ``[dram_base, dram_base + dram_size)`` (the general frame area) and the reserved
  pool of ``contiguous_memory`` (§10.3) is ``[pool_base, pool_base + pool_size)``. They come
  from the machine file's ``[memory]`` table (``machine.memory_config``: ``dram_base``,
  ``dram_size``, ``contiguous_pool_base``, ``contiguous_pool_size``) or the constructor's
  keywords; the defaults (the x86 preset's) are DRAM at 0x1_0000_0000 (4 GiB) of 256 GiB,
  pool at 0x80_0000_0000 of 256 GiB, clear of the x86 interrupt window 0xFEE0_0000.
* A DRAM frame has no content of its own: pinning gives frames to user memory and the
  frame's bytes *are* the user's bytes (``mm.dma_read/dma_write/copy``, kernel/uaccess.py).
  Each ``pin`` call gets frames of its own; pinning the same page twice gives two frames that
  reach the same user memory (the model does not share page frames between pins).
* ``pin`` gives one physical range per backing page, each page frame aligned to its page size
  P (a 2 MiB hugetlb page gets a 2 MiB aligned frame). Frames of one pin are taken from one
  free extent when one is large enough, so consecutive pages are usually physically
  consecutive too; the IOMMU sees them as separate ranges either way.
* ``pin(contiguous=True)`` takes one range from the reserved pool, aligned to the size
  rounded up to a power of two (§10.3: "each window's physical start aligned to the window
  size").
* MMIO: ``add_mmio(base, size, region)``; ``region.mmio_read(offset, size) -> int`` and
  ``region.mmio_write(offset, size, value)``, little-endian, sizes 1/2/4/8.
* Unbacked addresses (§10.1, Appendix A #22): a write is dropped, a read returns all-ones,
  both logged with ``machine.log``.
* ``copy`` between two RAM ranges of the same ``mm`` is one ``mm.copy`` (memmove) per run of
  frames that is contiguous both physically and virtually: the fast path for bulk DMA.

hw/ raises no errnos: running out of simulated DRAM raises ``MemoryError`` (the kernel maps
it to ENOMEM); a user page that vanished behind a pin is logged and treated as unbacked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sortedcontainers import SortedDict

DEFAULT_DRAM_BASE = 0x1_0000_0000
DEFAULT_DRAM_SIZE = 0x40_0000_0000
DEFAULT_POOL_BASE = 0x80_0000_0000
DEFAULT_POOL_SIZE = 0x40_0000_0000
FRAME = 4096  # the smallest frame; contiguous-pool ranges are rounded up to it


class MmioRegion(Protocol):
    def mmio_read(self, offset: int, size: int) -> int: ...
    def mmio_write(self, offset: int, size: int, value: int) -> None: ...


class DmaMemory(Protocol):
    """What a pinned frame reaches: kernel/uaccess.py LocalMemory, or the runner's remote mm."""

    def dma_read(self, addr: int, size: int) -> bytes: ...
    def dma_write(self, addr: int, data: bytes | bytearray | memoryview) -> None: ...
    def copy(self, dst: int, src: int, size: int) -> None: ...


def _round_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def next_pow2(x: int) -> int:
    return 1 if x <= 1 else 1 << (x - 1).bit_length()


class ExtentAllocator:
    """First-fit allocator of aligned physical extents in ``[base, base + size)``."""

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size
        self._free: SortedDict = SortedDict()  # start -> end (half-open), never adjacent
        if size > 0:
            self._free[base] = base + size

    def alloc(self, size: int, align: int) -> int | None:
        for start, end in self._free.items():
            s = _round_up(start, align)
            if s + size <= end:
                del self._free[start]
                if start < s:
                    self._free[start] = s
                if s + size < end:
                    self._free[s + size] = end
                return s
        return None

    def free(self, start: int, size: int) -> None:
        end = start + size
        i = self._free.bisect_right(start)
        if i > 0:  # merge with the extent before
            pstart = self._free.keys()[i - 1]
            pend = self._free[pstart]
            if pend > start:
                raise ValueError(f"double free of physical 0x{start:x}")
            if pend == start:
                start = pstart
                del self._free[pstart]
        nxt = self._free.bisect_left(end)
        keys = self._free.keys()
        if nxt < len(keys) and keys[nxt] == end:
            end = self._free.pop(end)
        self._free[start] = end

    def free_bytes(self) -> int:
        return sum(e - s for s, e in self._free.items())


@dataclass
class RamRun:
    """Frames ``[start, end)`` backing ``mm`` at ``vaddr`` (physically and virtually linear)."""

    start: int
    end: int
    mm: Any
    vaddr: int
    page_size: int
    pool: bool


# A segment of a physical range: ("ram", mm, vaddr, n) | ("mmio", region, offset, n) |
# ("none", phys, 0, n).
Segment = tuple[str, Any, int, int]


class PhysBus:
    """The machine's physical address space (docs/architecture.md §6, ``machine.bus``)."""

    def __init__(
        self,
        machine: Any,
        dram_base: int | None = None,
        dram_size: int | None = None,
        pool_base: int | None = None,
        pool_size: int | None = None,
    ) -> None:
        cfg = getattr(machine, "memory_config", None) or {}
        dram_base = cfg.get("dram_base", DEFAULT_DRAM_BASE) if dram_base is None else dram_base
        dram_size = cfg.get("dram_size", DEFAULT_DRAM_SIZE) if dram_size is None else dram_size
        if pool_base is None:
            pool_base = cfg.get("contiguous_pool_base", DEFAULT_POOL_BASE)
        if pool_size is None:
            pool_size = cfg.get("contiguous_pool_size", DEFAULT_POOL_SIZE)
        if any(v % FRAME for v in (dram_base, dram_size, pool_base, pool_size)):
            raise ValueError("DRAM and contiguous pool base/size must be 4 KiB multiples")
        if pool_size and dram_size and pool_base < dram_base + dram_size \
                and dram_base < pool_base + pool_size:
            raise ValueError("the contiguous pool overlaps DRAM")
        self.machine = machine
        self.dram_base = dram_base
        self.dram_size = dram_size
        self.pool_base = pool_base
        self.pool_size = pool_size
        self._general = ExtentAllocator(dram_base, dram_size)
        self._pool = ExtentAllocator(pool_base, pool_size)
        self._ram: SortedDict = SortedDict()  # start -> RamRun
        self._mmio: SortedDict = SortedDict()  # base -> (end, region)
        self.unbacked_reads = 0
        self.unbacked_writes = 0

    # -- MMIO ------------------------------------------------------------------------------

    def add_mmio(self, base: int, size: int, region: MmioRegion) -> None:
        end = base + size
        i = self._mmio.bisect_left(base)
        keys = self._mmio.keys()
        if (i < len(keys) and keys[i] < end) or (i > 0 and self._mmio[keys[i - 1]][0] > base):
            raise ValueError(f"MMIO range 0x{base:x}+0x{size:x} overlaps another")
        for lo, n in ((self.dram_base, self.dram_size), (self.pool_base, self.pool_size)):
            if base < lo + n and lo < end:
                raise ValueError(f"MMIO range 0x{base:x}+0x{size:x} overlaps DRAM")
        self._mmio[base] = (end, region)

    def remove_mmio(self, base: int) -> None:
        del self._mmio[base]

    def mmio_at(self, phys: int) -> tuple[int, MmioRegion] | None:
        """(base, region) of the MMIO range holding ``phys``."""
        i = self._mmio.bisect_right(phys)
        if i:
            base = self._mmio.keys()[i - 1]
            end, region = self._mmio[base]
            if phys < end:
                return base, region
        return None

    # -- pinning ---------------------------------------------------------------------------

    def pin(
        self, mm: Any, vaddr: int, size: int, page_size: int = FRAME, contiguous: bool = False
    ) -> list[tuple[int, int]]:
        """Give frames to user memory ``[vaddr, vaddr + size)`` of ``mm`` (SPEC §10.2, §10.3).

        Returns ``[(phys, length)]``: one range per backing page of size ``page_size`` (the
        first may start inside its page), or with ``contiguous`` one range from the reserved
        pool aligned to ``next_pow2(size)``.
        """
        if size <= 0:
            return []
        if page_size <= 0 or page_size & (page_size - 1):
            raise ValueError(f"page size {page_size} is not a power of two")
        if contiguous:
            length = _round_up(size, FRAME)
            start = self._pool.alloc(length, max(FRAME, next_pow2(size)))
            if start is None:
                raise MemoryError(f"contiguous pool exhausted ({size} bytes wanted)")
            self._insert(RamRun(start, start + length, mm, vaddr, FRAME, True))
            return [(start, size)]

        first = vaddr - vaddr % page_size
        npages = (_round_up(vaddr + size, page_size) - first) // page_size
        bases: list[int] = []
        if self._general.free_bytes() < npages * page_size:
            raise MemoryError(f"DRAM exhausted pinning {size} bytes")
        start = self._general.alloc(npages * page_size, page_size)
        if start is not None:
            self._insert(RamRun(start, start + npages * page_size, mm, first, page_size, False))
            bases = [start + i * page_size for i in range(npages)]
        else:  # fragmented: one frame per page
            for i in range(npages):
                s = self._general.alloc(page_size, page_size)
                if s is None:
                    self.unpin([(b, page_size) for b in bases])
                    raise MemoryError(f"DRAM exhausted pinning {size} bytes")
                self._insert(RamRun(s, s + page_size, mm, first + i * page_size, page_size, False))
                bases.append(s)
        out: list[tuple[int, int]] = []
        end = vaddr + size
        for i, base in enumerate(bases):
            lo = max(vaddr, first + i * page_size)
            hi = min(end, first + (i + 1) * page_size)
            out.append((base + (lo - first - i * page_size), hi - lo))
        return out

    def unpin(self, ranges: list[tuple[int, int]]) -> None:
        """Release the frames under ``ranges`` (as ``pin`` returned them, or pieces of them).

        Whole frames are released: a range frees every page frame it touches.
        """
        for phys, length in ranges:
            if length <= 0:
                continue
            run = self._run_at(phys)
            if run is None:
                self.machine.log(f"bus: unpin of 0x{phys:x}+0x{length:x}: not pinned")
                continue
            pos = phys
            end = phys + length
            while pos < end:
                run = self._run_at(pos)
                if run is None:
                    self.machine.log(f"bus: unpin of 0x{pos:x}: not pinned")
                    break
                p = run.page_size
                lo = max(run.start, pos - (pos - run.start) % p)
                hi = min(run.end, _round_up(min(end, run.end) - run.start, p) + run.start)
                self._remove(run, lo, hi)
                (self._pool if run.pool else self._general).free(lo, hi - lo)
                pos = hi

    def _run_at(self, phys: int) -> RamRun | None:
        i = self._ram.bisect_right(phys)
        if i:
            run = self._ram.values()[i - 1]
            if phys < run.end:
                return run
        return None

    def _insert(self, run: RamRun) -> None:
        self._ram[run.start] = run

    def _remove(self, run: RamRun, lo: int, hi: int) -> None:
        del self._ram[run.start]
        if run.start < lo:
            self._ram[run.start] = RamRun(
                run.start, lo, run.mm, run.vaddr, run.page_size, run.pool
            )
        if hi < run.end:
            self._ram[hi] = RamRun(
                hi, run.end, run.mm, run.vaddr + (hi - run.start), run.page_size, run.pool
            )

    def lookup(self, phys: int) -> tuple[Any, int] | None:
        """(mm, vaddr) behind a pinned physical address, None if it is not pinned RAM."""
        run = self._run_at(phys)
        return None if run is None else (run.mm, run.vaddr + (phys - run.start))

    def pinned_bytes(self) -> int:
        return sum(r.end - r.start for r in self._ram.values())

    # -- access ----------------------------------------------------------------------------

    def segments(self, phys: int, size: int) -> Iterator[Segment]:
        """Split ``[phys, phys + size)`` into RAM / MMIO / unbacked pieces. Adjacent RAM runs
        of one mm that are virtually contiguous come out as one piece."""
        end = phys + size
        pos = phys
        pending: list[Any] | None = None  # ["ram", mm, vaddr, n] being merged
        while pos < end:
            run = self._run_at(pos)
            if run is not None:
                n = min(run.end, end) - pos
                va = run.vaddr + (pos - run.start)
                if pending is not None and pending[1] is run.mm and pending[2] + pending[3] == va:
                    pending[3] += n
                else:
                    if pending is not None:
                        yield tuple(pending)  # type: ignore[misc]
                    pending = ["ram", run.mm, va, n]
                pos += n
                continue
            if pending is not None:
                yield tuple(pending)  # type: ignore[misc]
                pending = None
            hit = self.mmio_at(pos)
            if hit is not None:
                base, region = hit
                n = min(self._mmio[base][0], end) - pos
                yield ("mmio", region, pos - base, n)
                pos += n
                continue
            nxt = end  # unbacked up to the next RAM run or MMIO range
            i = self._ram.bisect_right(pos)
            if i < len(self._ram):
                nxt = min(nxt, self._ram.keys()[i])
            j = self._mmio.bisect_right(pos)
            if j < len(self._mmio):
                nxt = min(nxt, self._mmio.keys()[j])
            yield ("none", pos, 0, nxt - pos)
            pos = nxt
        if pending is not None:
            yield tuple(pending)  # type: ignore[misc]

    def read(self, phys: int, size: int) -> bytes:
        if size <= 0:
            return b""
        parts: list[bytes] = []
        pos = phys
        for kind, obj, off, n in self.segments(phys, size):
            if kind == "ram":
                data = self._ram_read(obj, off, n, pos)
            elif kind == "mmio":
                data = _mmio_read(obj, off, n)
            else:
                data = self._unbacked_read(pos, n)
            parts.append(data)
            pos += n
        return b"".join(parts)

    def write(self, phys: int, data: bytes | bytearray | memoryview) -> None:
        mv = memoryview(data).cast("B")
        pos = phys
        done = 0
        for kind, obj, off, n in self.segments(phys, len(mv)):
            chunk = mv[done : done + n]
            if kind == "ram":
                self._ram_write(obj, off, chunk, pos)
            elif kind == "mmio":
                _mmio_write(obj, off, chunk)
            else:
                self._unbacked_write(pos, n)
            pos += n
            done += n

    def copy(self, dst: int, src: int, size: int) -> None:
        """Copy ``size`` bytes from ``src`` to ``dst`` (memmove semantics within one mm)."""
        if size <= 0:
            return
        src_segs = list(self.segments(src, size))
        dst_segs = list(self.segments(dst, size))
        if (
            len(src_segs) == 1
            and len(dst_segs) == 1
            and src_segs[0][0] == "ram"
            and dst_segs[0][0] == "ram"
            and src_segs[0][1] is dst_segs[0][1]
        ):  # fast path: one memmove
            mm = src_segs[0][1]
            try:
                mm.copy(dst_segs[0][2], src_segs[0][2], size)
            except OSError:
                self._lost(src, size)
            return
        si = di = 0
        s_done = d_done = 0  # bytes consumed of the current src / dst segment
        pos = 0
        while pos < size:
            sk, so, soff, sn = src_segs[si]
            dk, do, doff, dn = dst_segs[di]
            n = min(sn - s_done, dn - d_done)
            if sk == "ram" and dk == "ram" and so is do:
                try:
                    so.copy(doff + d_done, soff + s_done, n)
                except OSError:
                    self._lost(src + pos, n)
            else:
                self.write(dst + pos, self.read(src + pos, n))
            pos += n
            s_done += n
            d_done += n
            if s_done == sn:
                si, s_done = si + 1, 0
            if d_done == dn:
                di, d_done = di + 1, 0

    # -- helpers ---------------------------------------------------------------------------

    def _ram_read(self, mm: Any, vaddr: int, n: int, phys: int) -> bytes:
        try:
            return mm.dma_read(vaddr, n)
        except OSError:
            self._lost(phys, n)
            return b"\xff" * n

    def _ram_write(self, mm: Any, vaddr: int, data: memoryview, phys: int) -> None:
        try:
            mm.dma_write(vaddr, data)
        except OSError:
            self._lost(phys, len(data))

    def _lost(self, phys: int, n: int) -> None:
        self.machine.log(
            f"bus: pinned frames at 0x{phys:x}+0x{n:x} reach no user memory; access dropped"
        )

    def _unbacked_read(self, phys: int, n: int) -> bytes:
        self.unbacked_reads += 1
        self.machine.log(f"bus: read of unbacked physical 0x{phys:x}+0x{n:x} returns all-ones")
        return b"\xff" * n

    def _unbacked_write(self, phys: int, n: int) -> None:
        self.unbacked_writes += 1
        self.machine.log(f"bus: write to unbacked physical 0x{phys:x}+0x{n:x} dropped")


def _mmio_pieces(offset: int, n: int) -> Iterator[tuple[int, int, int]]:
    """(offset, size, index) pieces for an MMIO access: one access if 1/2/4/8 bytes and
    naturally aligned, else naturally aligned 4-, 2-, 1-byte pieces."""
    if n in (1, 2, 4, 8) and offset % n == 0:
        yield offset, n, 0
        return
    i = 0
    while i < n:
        o = offset + i
        for sz in (4, 2, 1):
            if o % sz == 0 and n - i >= sz:
                yield o, sz, i
                i += sz
                break


def _mmio_read(region: MmioRegion, offset: int, n: int) -> bytes:
    out = bytearray(n)
    for o, sz, i in _mmio_pieces(offset, n):
        val = region.mmio_read(o, sz) & ((1 << (8 * sz)) - 1)
        out[i : i + sz] = val.to_bytes(sz, "little")
    return bytes(out)


def _mmio_write(region: MmioRegion, offset: int, data: memoryview) -> None:
    for o, sz, i in _mmio_pieces(offset, len(data)):
        region.mmio_write(o, sz, int.from_bytes(data[i : i + sz], "little"))
