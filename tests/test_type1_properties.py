"""Property tests: random MAP/UNMAP sequences on Type1 v1 and v2 agree with a small reference
model, and the x86 page table agrees with a page dictionary (SPEC §5.1-§5.3, STYLE "Tests")."""

from __future__ import annotations

import errno

from hypothesis import given, settings
from hypothesis import strategies as st
from type1_helpers import (
    PAGE,
    Buf,
    backend,
    check_consistency,
    dma_map,
    errno_of,
    group_rids,
    kernel,
    type1_container,
)

from vfiosim.hw.iommu import IOMMU_READ, IOMMU_WRITE, Domain, IommuFault
from vfiosim.kernel.rbtree import RbNode, RbTree
from vfiosim.uapi.vfio import (
    VFIO_DMA_UNMAP_FLAG_ALL,
    VFIO_IOMMU_UNMAP_DMA,
    vfio_iommu_type1_dma_unmap,
)

NPAGES = 24  # the IOVA pages the sequences play with
BASE = 0x100_0000


class Reference:
    """The Type1 rules on a set of mappings {first page: page count}."""

    def __init__(self, v2: bool) -> None:
        self.v2 = v2
        self.maps: dict[int, int] = {}

    def pages(self) -> set[int]:
        return {p for s, n in self.maps.items() for p in range(s, s + n)}

    def map(self, start: int, n: int) -> int:
        if self.pages() & set(range(start, start + n)):
            return errno.EEXIST
        self.maps[start] = n
        return 0

    def unmap(self, start: int, n: int) -> tuple[int, int]:
        """(errno, pages unmapped)."""
        last = start + n - 1
        if self.v2:
            for s, cnt in self.maps.items():
                if s < start <= s + cnt - 1:
                    return errno.EINVAL, 0  # bisects at the start
                if s <= last < s + cnt - 1:
                    return errno.EINVAL, 0  # bisects at the end
        ordered = sorted(self.maps.items())
        first = next(((s, cnt) for s, cnt in ordered if s + cnt > start), None)
        if not self.v2 and first is not None and first[0] < start and first[0] <= last:
            return 0, 0  # v1: an unmap that starts inside a mapping unmaps nothing
        gone = [s for s, _ in ordered if start <= s <= last]
        total = sum(self.maps.pop(s) for s in gone)
        return 0, total

    def unmap_all(self) -> int:
        total = sum(self.maps.values())
        self.maps.clear()
        return total


op = st.one_of(
    st.tuples(st.just("map"), st.integers(0, NPAGES - 1), st.integers(1, 6)),
    st.tuples(st.just("unmap"), st.integers(0, NPAGES - 1), st.integers(1, 10)),
    st.tuples(st.just("all"), st.just(0), st.just(0)),
)


@settings(max_examples=120, deadline=None)
@given(v2=st.booleans(), ops=st.lists(op, min_size=1, max_size=30))
def test_random_map_unmap_matches_reference(v2, ops):
    ref = Reference(v2)
    buf = Buf((NPAGES + 6) * PAGE)
    try:
        with kernel() as k:
            fd = type1_container(k, "v2" if v2 else "v1")
            b = backend(k, fd)
            rid = group_rids(k)[0]
            for kind, start, n in ops:
                iova = BASE + start * PAGE
                if kind == "map":
                    va = buf.va + start * PAGE
                    got = errno_of(lambda v=va, i=iova, s=n * PAGE: dma_map(k, fd, v, i, s))
                    assert got == ref.map(start, n)
                elif kind == "unmap":
                    u = vfio_iommu_type1_dma_unmap(argsz=24, iova=iova, size=n * PAGE)
                    got = errno_of(lambda u_=u: k.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, u_))
                    want_err, want_pages = ref.unmap(start, n)
                    assert got == want_err
                    if not got:
                        assert u.size == want_pages * PAGE
                    else:
                        assert u.size == n * PAGE  # not written back
                else:
                    u = vfio_iommu_type1_dma_unmap(argsz=24, flags=VFIO_DMA_UNMAP_FLAG_ALL)
                    assert k.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, u) == 0
                    assert u.size == ref.unmap_all() * PAGE
                assert {(d.iova - BASE) // PAGE: d.size // PAGE for d in b.mappings()} \
                    == ref.maps
                check_consistency(k, b)
            # the hardware agrees page by page
            pages = ref.pages()
            for p in range(NPAGES + 6):
                try:
                    k.machine.iommu.translate(rid, BASE + p * PAGE, PAGE, True)
                    hit = True
                except IommuFault:
                    hit = False
                assert hit == (p in pages), p
            assert k.machine.bus.pinned_bytes() == len(pages) * PAGE
    finally:
        buf.close()


# ---------------------------------------------------------------------------------------------
# hw/iommu.py Domain against a page dictionary

dop = st.one_of(
    st.tuples(st.just("map"), st.integers(0, 40), st.integers(1, 8), st.integers(0, 60),
              st.sampled_from([IOMMU_READ, IOMMU_WRITE, IOMMU_READ | IOMMU_WRITE])),
    st.tuples(st.just("unmap"), st.integers(0, 40), st.integers(1, 12), st.just(0), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(dop, max_size=40),
       probe=st.tuples(st.integers(0, 50), st.integers(1, 10), st.booleans()))
def test_domain_matches_page_dictionary(ops, probe):
    d = Domain()
    pages: dict[int, tuple[int, int]] = {}  # iova page -> (phys page, prot)
    for kind, start, n, phys, prot in ops:
        rng = range(start, start + n)
        if kind == "map":
            if any(p in pages for p in rng):
                continue  # the kernel never maps a mapped IOVA
            d.map(start * PAGE, phys * PAGE, n * PAGE, prot)
            for i, p in enumerate(rng):
                pages[p] = (phys + i, prot)
        else:
            removed = d.unmap(start * PAGE, n * PAGE)
            assert removed == sum(PAGE for p in rng if p in pages)
            for p in rng:
                pages.pop(p, None)
        # extents never overlap and cover exactly the mapped pages
        covered = [p for iova, size, _, _ in d.extents()
                   for p in range(iova // PAGE, (iova + size) // PAGE)]
        assert sorted(covered) == sorted(pages)
    start, n, write = probe
    need = IOMMU_WRITE if write else IOMMU_READ
    ok = all(p in pages and pages[p][1] & need for p in range(start, start + n))
    try:
        got = d.lookup(start * PAGE + 8, n * PAGE - 8, write)
    except IommuFault:
        assert not ok
        return
    assert ok
    # the pieces are the pages' frames, coalesced where contiguous
    want: list[tuple[int, int]] = []
    pos, end = start * PAGE + 8, (start + n) * PAGE
    while pos < end:
        page = pos // PAGE
        take = min(end, (page + 1) * PAGE) - pos
        phys = pages[page][0] * PAGE + pos % PAGE
        if want and want[-1][0] + want[-1][1] == phys:
            want[-1] = (want[-1][0], want[-1][1] + take)
        else:
            want.append((phys, take))
        pos += take
    assert got == want


def _rb_insert(tree: RbTree[int], key: int) -> RbNode[int]:
    parent, left, n = None, False, tree.root
    while n is not None:
        parent, left = n, key <= n.item
        n = n.left if left else n.right
    return tree.link(key, parent, left)


def test_rbtree_shape_of_sequential_inserts():
    """lib/rbtree.c on keys 1..8 inserted in order: 4 at the root, 2 and 6 below it (the
    CLRS insert cases), 8 red under 7."""
    tree: RbTree[int] = RbTree()
    nodes = {k: _rb_insert(tree, k) for k in range(1, 9)}
    root = tree.root
    assert root is not None and root.item == 4 and not root.red
    assert root.left is nodes[2] and root.right is nodes[6]
    assert nodes[2].red and nodes[6].red and nodes[8].red and nodes[7].right is nodes[8]
    tree.check()
    # erase the root: its successor 5 takes its place and colour
    tree.erase(nodes[4])
    assert tree.root is nodes[5] and not nodes[5].red
    assert list(tree) == [1, 2, 3, 5, 6, 7, 8]
    tree.check()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=120))
def test_rbtree_invariants(ops):
    """Random inserts and erases keep the red-black invariants and the in-order sequence."""
    tree: RbTree[int] = RbTree()
    nodes: dict[int, RbNode[int]] = {}
    for insert, key in ops:
        if insert and key not in nodes:
            nodes[key] = _rb_insert(tree, key)
        elif not insert and key in nodes:
            tree.erase(nodes.pop(key))
        tree.check()
        assert list(tree) == sorted(nodes) and len(tree) == len(nodes)
