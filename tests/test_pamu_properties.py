"""Property tests: random SET_ATTR / MAP / UNMAP / MSI-bank sequences against a reference
model of the windows (SPEC §6.3, §6.5–§6.8, §7.2–§7.4).

The model below is written from the SPEC, not from the backend: per window it knows what a
client can infer (free, DMA with vaddr and permissions, MSI bank), and which stash id the
entries must carry.  After every call the test compares the errno or result, GET_ATTR,
GET_INFO, the backend's window table and mapping list, the SPAACT usage, locked_vm, the PAACE
and SPAACE words decoded with the field layout of SPEC §7.2 and checked against the §7.3
formulas (WBA, WSE, MW, WCE, fspi, PT, LIODN, V, AP, ATM, SWSE, TWBA, CID), and -- through
hw/pamu.py's translation of those words -- what a device of the group would reach at every
window.  Malformed calls (misaligned or empty ranges, MSI banks off a window start) check
that the EINVAL rules come before the EBUSY/ENODEV ones and change nothing.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamu_helpers import (
    APERTURE_MAX,
    P4080_MSIIR,
    T4240_MSIIR,
    Buffer,
    Pamu,
    get_info,
    iova_ranges,
    open_pamu,
)

from vfiosim import Kernel
from vfiosim.hw.pamu import PAACE_SIZE, decode_paace

PAGE = 4096
R, W = 1, 2


@dataclass
class Win:
    kind: str  # "dma" | "msi"
    prot: int
    vaddr: int = 0  # dma
    mid: int = 0  # dma: which MAP_DMA call (mappings are never merged)
    bank: int = -1  # msi


@dataclass
class Model:
    """What SPEC §6 says the container holds."""

    mode: str
    msiir: list[int]
    preset: str
    start: int = 0
    end: int = APERTURE_MAX
    geom_set: bool = False
    count: int = 0  # 0: WINDOWS not configured
    wins: dict[int, Win] = field(default_factory=dict)
    enabled: bool = False
    next_mid: int = 1
    stash_attr: tuple[int, int] = (0, 0)  # what GET PAMU_STASH returns
    stash_cid: int | None = None  # the CID every entry carries once WINDOWS is set

    @property
    def banks(self) -> int:
        return len(self.msiir)

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    @property
    def ws(self) -> int:
        return self.size // self.count

    def has_dma(self) -> bool:
        return any(w.kind == "dma" for w in self.wins.values())

    # -- operations: return an errno or a result ----------------------------------------------
    def geometry(self, start: int, end: int) -> int:
        size = end - start + 1
        if size < PAGE or size & (size - 1) or start % size or end > APERTURE_MAX:
            return errno.EINVAL
        if self.enabled:
            return errno.EBUSY
        self.start, self.end, self.geom_set = start, end, True
        if self.count:
            self.count = 0
            self.wins.clear()
        return 0

    def windows(self, n: int) -> int:
        if self.enabled:
            return errno.EBUSY
        if not self.geom_set or n <= 0 or n & (n - 1) or n > 256 or self.size // n < PAGE:
            return errno.EINVAL
        self.count = n
        self.wins.clear()
        return 0

    def map_dma(self, first: int, nwin: int, prot: int, vaddr: int) -> int:
        if not self.count:
            return errno.EINVAL
        usable = self.count - self.banks if self.mode == "auto" else self.count
        if first + nwin > max(usable, 0):
            return errno.EINVAL
        ks = range(first, first + nwin)
        if any(k in self.wins for k in ks):
            return errno.EBUSY  # DMA overlap, or (explicit) a bank's window
        first_mapping = not self.has_dma()
        mid = self.next_mid
        self.next_mid += 1
        for i, k in enumerate(ks):
            self.wins[k] = Win("dma", prot, vaddr + i * self.ws, mid)
        if self.mode == "auto" and first_mapping:
            for b in range(self.banks):
                self.wins[self.count - 1 - b] = Win("msi", W, bank=b)
        self.enabled = True
        return 0

    def unmap_dma(self, first: int, nwin: int) -> int | tuple[str, int]:
        if not self.count:
            return errno.EINVAL
        removed = 0
        for k in range(first, min(first + nwin, self.count)):
            if k in self.wins and self.wins[k].kind == "dma":
                del self.wins[k]
                removed += 1
        if removed and not self.has_dma():
            if self.mode == "auto":
                self.wins.clear()
            self.enabled = False
        return ("size", removed * self.ws)

    def map_bank(self, bank: int, win: int, prot: int) -> int:
        if self.mode == "auto":
            return errno.ENOTTY
        if bank >= self.banks:
            return errno.ENODEV  # the SDK looks the bank up before the window
        if not self.count or win >= self.count:
            return errno.EINVAL
        if win in self.wins:
            return errno.EBUSY
        self.wins[win] = Win("msi", prot, bank=bank)
        return 0

    def map_bank_off(self, bank: int) -> int:
        """MAP_MSI_BANK at an iova that is not the start of a window."""
        if self.mode == "auto":
            return errno.ENOTTY
        if bank >= self.banks:
            return errno.ENODEV
        return errno.EINVAL

    def stash(self, cpu: int, cache: int) -> int:
        """SPEC §6.3 PAMU_STASH: cache, then cpu, then WINDOWS.  The kernel stores the
        attribute and its stash id before judging them (configure_domain_stash), so GET
        returns the last request and a request refused only for want of WINDOWS is
        programmed when WINDOWS is set."""
        self.stash_attr = (cpu, cache)
        self.stash_cid = stash_id(self.preset, cpu, cache)
        if self.stash_cid is None or not self.count:
            return errno.EINVAL
        return 0

    def unmap_bank(self, win: int) -> int:
        if self.mode == "auto":
            return errno.ENOTTY
        if self.count and win in self.wins and self.wins[win].kind == "msi":
            del self.wins[win]
            return 0
        return errno.EINVAL

    def expected_mappings(self) -> list[tuple[int, int, int]]:
        """(iova, size, vaddr) of every DMA mapping: runs of adjacent windows of one call."""
        out: list[tuple[int, int, int]] = []
        prev: tuple[int, int] | None = None
        for k in sorted(self.wins):
            w = self.wins[k]
            if w.kind != "dma":
                prev = None
                continue
            iova = self.start + k * self.ws
            if prev == (k - 1, w.mid):
                i0, s0, v0 = out[-1]
                out[-1] = (i0, s0 + self.ws, v0)
            else:
                out.append((iova, self.ws, w.vaddr))
            prev = (k, w.mid)
        return out


def stash_id(preset: str, cpu: int, cache: int) -> int | None:
    """The stash id of {cpu, cache}, None when the request is refused (SPEC §6.3).

    Ids as u-boot writes ``cache-stash-id`` (arch/powerpc/cpu/mpc85xx/fdt.c:
    ``ft_fixup_cache`` L1 = reg·2 + 32, ``ft_fixup_l2cache`` L2 = reg·2 + 33 on e500mc and
    reg/4 + 33 for the first thread of each 8-thread e6500 cluster, ``ft_fixup_l3cache``
    L3 = 1); e6500 cpu nodes have reg = <2c 2c+1>.  t4240: erratum A-007907, L1 → L2.
    """
    cpus = 8 if preset == "p4080" else 24
    if cache not in (1, 2, 3) or not 0 <= cpu < cpus:
        return None
    if cache == 3:
        return 1
    if preset == "p4080":
        return 32 + 2 * cpu + (cache == 2)
    return 33 + (cpu - cpu % 8) // 4  # every t4240 request lands in the cluster's L2


# ---------------------------------------------------------------------------------------------
# strategies

geometries = st.builds(
    lambda log2, mult, bad: (mult << log2, (mult << log2) + (1 << log2) - 1 + bad),
    st.integers(12, 25), st.integers(0, 3), st.sampled_from([0, 0, 0, 0x1000]))
small = st.one_of(st.integers(0, 3), st.integers(0, 12))
maps = st.tuples(st.just("map"), st.tuples(small, st.integers(1, 4),
                                          st.sampled_from([R, W, R | W]), st.integers(0, 7)))
unmaps = st.tuples(st.just("unmap"), st.tuples(small, st.integers(1, 6)))
banks = st.tuples(st.just("map_bank"), st.tuples(st.integers(0, 4), st.integers(0, 20),
                                                 st.sampled_from([R, W, R | W])))
#: Malformed ranges: iova off a window boundary, size not a whole number of windows, size 0.
bad_maps = st.tuples(st.just("map_bad"), st.tuples(small, st.integers(1, 3),
                                                  st.sampled_from(["iova", "size", "zero"])))
bad_unmaps = st.tuples(st.just("unmap_bad"), st.tuples(small, st.integers(1, 3),
                                                      st.sampled_from(["iova", "size", "zero"])))
stashes = st.tuples(st.just("stash"), st.tuples(st.sampled_from([0, 1, 7, 8, 9, 23, 24]),
                                                st.sampled_from([0, 1, 2, 3, 4])))
OPS = {
    "geometry": st.tuples(st.just("geometry"), geometries),
    "windows": st.tuples(st.just("windows"),
                         st.sampled_from([0, 1, 2, 3, 4, 8, 16, 32, 64, 256])),
    "map": maps,
    "unmap": unmaps,
    "map_bank": banks,
    "unmap_bank": st.tuples(st.just("unmap_bank"), st.integers(0, 20)),
    "map_bank_off": st.tuples(st.just("map_bank_off"), st.tuples(st.integers(0, 4),
                                                                 st.integers(0, 20))),
    "map_bad": bad_maps,
    "unmap_bad": bad_unmaps,
    "stash": stashes,
}
#: Weighted: mostly maps and unmaps, now and then a reconfiguration.
ops = st.sampled_from(["geometry", "windows", "stash", "map_bad", "unmap_bad", "map_bank_off"]
                      + ["map"] * 8 + ["unmap"] * 5 + ["map_bank"] * 3 + ["unmap_bank"] * 2
                      ).flatmap(OPS.__getitem__)
#: Most sequences start from a configured container, so that maps and unmaps get going.
configured = st.tuples(
    st.tuples(st.just("geometry"), st.builds(
        lambda log2, mult: (mult << log2, (mult << log2) + (1 << log2) - 1),
        st.integers(14, 25), st.integers(0, 3))),
    st.tuples(st.just("windows"), st.sampled_from([1, 4, 8, 16, 16, 32, 32, 256])),
).map(list)
prefixes = st.sampled_from([False, True, True, True, True]).flatmap(
    lambda c: configured if c else st.just([]))
sequences = st.builds(lambda a, b: a + b, prefixes, st.lists(ops, min_size=3, max_size=30))


CONFIGS = [("p4080", "auto", P4080_MSIIR), ("p4080", "explicit", P4080_MSIIR),
           ("t4240", "auto", T4240_MSIIR), ("t4240", "explicit", T4240_MSIIR)]


@pytest.fixture(scope="module")
def buf() -> Buffer:
    b = Buffer(160 << 20)  # virtual only: contiguous_memory pins from the pool
    yield b
    b.close()


@pytest.mark.parametrize("preset,mode,msiir", CONFIGS)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=sequences)
def test_random_sequences_agree_with_model(buf: Buffer, preset: str, mode: str,
                                           msiir: list[int], seq: list) -> None:
    k = Kernel.from_preset(preset, clock="manual", msi_mode=mode, contiguous_memory=True,
                           av_disables_liodn=False)
    try:
        k.process.cap_ipc_lock = True
        p = open_pamu(k)
        model = Model(mode, msiir, preset)
        free0 = k.machine.pamu.spaace_free_count()
        for op, arg in seq:
            want, got = run(p, model, op, arg, buf)
            assert got == want, (op, arg)
            check(p, model, buf, free0)
    finally:
        k.shutdown()


def call(fn, *args) -> int | tuple[str, int]:  # noqa: ANN001
    try:
        return fn(*args)
    except OSError as e:
        return e.errno


def run(p: Pamu, m: Model, op: str, arg, buf: Buffer):  # noqa: ANN001, ANN201
    if op == "geometry":
        start, end = arg
        return m.geometry(start, end), call(p.set_geometry, start, end)
    if op == "windows":
        return m.windows(arg), call(p.set_windows, arg)
    ws = m.ws if m.count else 1 << 12
    if op == "map":
        first, nwin, prot, voff = arg
        vaddr = buf.addr + voff * PAGE
        iova, size = m.start + first * ws, nwin * ws
        if vaddr + size > buf.addr + buf.size:
            vaddr = buf.addr
        return m.map_dma(first, nwin, prot, vaddr), call(p.map_dma, vaddr, iova, size, prot)
    if op == "unmap":
        first, nwin = arg
        want = m.unmap_dma(first, nwin)
        try:
            got: int | tuple[str, int] = ("size", p.unmap_dma(m.start + first * ws, nwin * ws))
        except OSError as e:
            got = e.errno
        return want, got
    if op == "map_bank":
        bank, win, prot = arg
        return m.map_bank(bank, win, prot), call(p.map_msi_bank, bank, m.start + win * ws, prot)
    if op == "map_bank_off":
        bank, win = arg
        return m.map_bank_off(bank), call(p.map_msi_bank, bank, m.start + win * ws + ws // 2)
    if op in ("map_bad", "unmap_bad"):
        # SPEC §6.5 rule 5 / §6.6 rule 4: EINVAL, before any overlap or range rule.
        first, nwin, kind = arg
        iova, size = m.start + first * ws, nwin * ws
        if kind == "iova":
            iova += ws // 2
        elif kind == "size":
            size += ws // 2
        else:
            size = 0
        if op == "map_bad":
            return errno.EINVAL, call(p.map_dma, buf.addr, iova, size, R | W)
        return errno.EINVAL, call(p.unmap_dma, iova, size)
    if op == "stash":
        cpu, cache = arg
        return m.stash(cpu, cache), call(p.set_stash, cpu, cache)
    assert op == "unmap_bank"
    return m.unmap_bank(arg), call(p.unmap_msi_bank, m.start + arg * ws)


def check(p: Pamu, m: Model, buf: Buffer, free0: int) -> None:
    b = p.backend
    k = p.k
    assert p.geometry() == (m.start, m.end)
    assert p.windows() == (m.count or 256)
    assert b.enabled == m.enabled
    assert (p.paace(1)["v"] == 1) == m.enabled
    assert p.stash() == m.stash_attr
    assert k.machine.pamu.spaace_free_count() == free0 - (m.count - 1 if m.count > 1 else 0)
    ndma = sum(1 for w in m.wins.values() if w.kind == "dma")
    assert k.machine.locked_vm.get(k.process.pid, 0) == (ndma * m.ws if m.count else 0)
    if m.mode == "auto":
        info, raw = get_info(p)
        if m.count:
            assert info.iova_pgsizes == m.ws
            usable = m.count - m.banks
            want = [(m.start, m.start + usable * m.ws - 1)] if usable > 0 else []
        else:
            assert info.iova_pgsizes == 0
            want = [(m.start, m.end)]
        assert iova_ranges(raw, info) == want
    if not m.count:
        assert b.window_table() == []
        assert p.translate(1, m.start, 4, False) is None
        return
    table = b.window_table()
    assert len(table) == m.count
    assert [(x.iova, x.size, x.vaddr) for x in b.iter_dma()] == m.expected_mappings()
    # every window, or a sample of them for large counts
    ks = range(m.count) if m.count <= 32 else sorted({0, 1, m.count - 1, m.count - 2,
                                                      m.count - 3, m.count - 4} | set(m.wins))
    check_entries(p, m, ks)
    for kw in ks:
        row = table[kw]
        iova = m.start + kw * m.ws
        w = m.wins.get(kw)
        if w is None:
            assert row.kind == "free"
            assert p.translate(1, iova, 4, False) is None
            assert p.translate(1, iova, 4, True) is None
            continue
        assert row.kind == w.kind and row.prot == w.prot
        if w.kind == "dma":
            assert row.mapping is not None
            assert row.mapping.vaddr + (iova - row.mapping.iova) == w.vaddr
            off = min(m.ws - 4, 0x18)
            for write, bit in ((False, R), (True, W)):
                t = p.translate(1, iova + off, 4, write)
                if m.enabled and w.prot & bit:
                    assert t == [(row.paddr + off, 4)]
                    assert k.machine.bus.lookup(row.paddr + off) == (k.process.mm, w.vaddr + off)
                else:
                    assert t is None
        else:
            addr = m.msiir[w.bank]
            assert row.bank == w.bank and row.paddr == addr & ~0xFFF
            t = p.translate(1, iova + (addr & 0xFFF), 4, True)
            assert t == ([(addr, 4)] if m.enabled and w.prot & W else None)
            if m.ws > PAGE:
                assert p.translate(1, iova + PAGE, 4, True) is None
            assert b.msi_address(None, addr) == min(
                m.start + j * m.ws for j, x in m.wins.items()
                if x.kind == "msi" and x.bank == w.bank) + (addr & 0xFFF)


def log2(n: int) -> int:
    return n.bit_length() - 1


def check_entries(p: Pamu, m: Model, ks: range | list[int]) -> None:
    """The PAACE of the group's LIODN and the SPAACEs of windows ``ks``, decoded with the
    field layout of SPEC §7.2 and compared with the §7.3 formulas."""
    pamu = p.machine.pamu
    liodn = p.liodn(1)
    pp = decode_paace(pamu.pamu_get_ppaace(liodn).words(), secondary=False)
    assert pp["pt"] == 0 and pp["v"] == int(m.enabled)
    assert pp["wba"] == m.start
    entries: dict[int, dict] = {0: pp}
    if m.count > 1:
        # WINDOWS = n > 1: WSE the aperture, MW 1, WCE = log2(n) - 1, n - 1 SPAACEs at fspi
        assert (pp["wse"], pp["mw"], pp["wce"]) == (log2(m.size) - 1, 1, log2(m.count) - 1)
        for kw in ks:
            if kw:
                base = (pp["fspi"] + kw - 1) * PAACE_SIZE
                words = struct.unpack_from(">8I", pamu.spaact, base)
                entries[kw] = e = decode_paace(words, secondary=True)
                assert e["pt"] == 1 and e["liodn"] == liodn
    else:
        assert pp["mw"] == 0
        if 0 not in m.wins:
            assert pp["wse"] == log2(m.size) - 1
    for kw, e in entries.items():
        w = m.wins.get(kw)
        if kw == 0 and m.count == 1 and w is None:
            # §7.3 WINDOWS = 1: disabling the window of an enabled domain clears the LIODN's
            # V and leaves AP as it was
            assert pp["v"] == 0 or pp["ap"] == 0
        else:
            # window valid: k = 0 primary AP != denied, k > 0 SPAACE V = 1 (§7.4 rule 3)
            assert (e["ap"] != 0 if kw == 0 else e["v"] == 1) == (w is not None), kw
        if m.stash_cid is not None:
            assert e["cid"] == m.stash_cid, kw
        if m.count > 1:
            assert e["atm"] == 1  # window translation, configured or not
        if w is None:
            continue
        assert e["ap"] == w.prot  # IOMMU_READ -> query 1, IOMMU_WRITE -> update 2
        mapped = m.ws if w.kind == "dma" else PAGE
        if m.count > 1:
            assert e["swse"] == log2(mapped) - 1
        else:  # one window: the primary's WSE is the mapped size
            assert pp["wse"] == log2(mapped) - 1 and pp["atm"] == 1
        if w.kind == "dma":
            assert e["twba"] % mapped == 0  # naturally aligned (SPEC §10.3)
            assert p.machine.bus.lookup(e["twba"]) == (p.k.process.mm, w.vaddr)
        else:
            assert e["twba"] == m.msiir[w.bank] & ~0xFFF
