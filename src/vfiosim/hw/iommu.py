"""The x86 IOMMU hardware: page-table domains, context entries and DMA translation.

Hardware constraints, before any code (SPEC §2.4, §9.2, §10.4):

* A *domain* is one I/O page table: IOVA pages map to physical frames with read and/or write
  permission.  The smallest page is 4 KiB (``iova_pgsizes`` 0x40201000); every mapping the
  kernel programs is a multiple of it.  Programming an IOVA that is already mapped is a
  programming error of the caller (the kernel's iommu_map() would refuse it), not a DMA fault.
* A *context entry* points a requester id (``(segment << 16) | (bus << 8) | devfn``) at a
  domain.  A device without a context entry cannot DMA at all: every access faults.
* With interrupt remapping, a device *write* into the interrupt window
  0xFEE0_0000-0xFEEF_FFFF is an interrupt request, not memory traffic: it passes untranslated,
  whatever the domain (SPEC §9.2).  Reads from the window are translated (and fault: the window
  is never mappable, SPEC §5.5).
* Translation is all or nothing: a transfer with one unmapped page, or one page lacking the
  permission, faults whole and moves no byte.

The page table is stored as extents (``iova, size, phys, prot``) in a sorted dict: a lookup is
O(log n) in the number of extents, and a transfer costs O(log n + extents it crosses).  Extents
that continue each other in IOVA and physical space with the same permission are merged, so a
1 MiB transfer over physically contiguous memory is one piece.

Faults are not errnos (hw/ never raises them): :meth:`PageTableIommu.translate` raises
:class:`IommuFault`, and the device model records a :class:`FaultRecord` in ``machine.faults``
(docs/architecture.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sortedcontainers import SortedDict

if TYPE_CHECKING:
    from vfiosim.machine import Machine

#: IOMMU_READ / IOMMU_WRITE (include/linux/iommu.h): permission bits of a page-table entry.
IOMMU_READ = 1 << 0
IOMMU_WRITE = 1 << 1

#: The x86 interrupt window (Intel VT-d 3.13, "Handling Requests to Interrupt Address Range").
X86_MSI_BASE = 0xFEE0_0000
X86_MSI_LAST = 0xFEEF_FFFF

U64_END = 1 << 64


class IommuFault(Exception):
    """A DMA the IOMMU refused; ``reason`` says why (no context entry, not mapped, permission,
    address overflow).  Raised by ``translate``; no byte moved."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One entry of ``machine.faults``: a DMA that faulted (docs/architecture.md §6)."""

    time_ns: int
    device: str
    rid: int
    iova: int
    length: int
    direction: str  # "read" | "write"
    reason: str


@dataclass(slots=True)
class Extent:
    """Consecutive IOVA pages mapped to consecutive physical frames with one permission."""

    iova: int
    size: int
    phys: int
    prot: int

    @property
    def end(self) -> int:
        return self.iova + self.size


class Domain:
    """One I/O page table (struct iommu_domain of an x86 IOMMU driver).

    ``map``/``unmap`` are what iommu_map()/iommu_unmap() program; ``lookup`` is the hardware
    walk.  Extents never overlap.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._ext: SortedDict = SortedDict()  # iova -> Extent

    # -- programming ---------------------------------------------------------------------
    def map(self, iova: int, phys: int, size: int, prot: int) -> None:
        """Map ``[iova, iova + size)`` to ``[phys, phys + size)`` with ``prot``.

        The range must be unmapped (the caller checks); overlapping is a programming error
        (ValueError), as iommu_map() of a mapped IOVA is a kernel bug."""
        if size <= 0 or iova < 0 or iova + size > U64_END:
            raise ValueError(f"bad IOMMU mapping iova={iova:#x} size={size:#x}")
        if self._overlaps(iova, size):
            raise ValueError(f"IOVA {iova:#x}+{size:#x} is already mapped")
        ext = self._ext
        # Merge with the previous extent when it continues into this one.
        i = ext.bisect_left(iova)
        prev: Extent | None = ext.peekitem(i - 1)[1] if i > 0 else None
        if prev is not None and prev.end == iova and prev.phys + prev.size == phys \
                and prev.prot == prot:
            prev.size += size
            cur = prev
        else:
            cur = Extent(iova, size, phys, prot)
            ext[iova] = cur
        # Merge with the following extent when this one continues into it.
        nxt: Extent | None = ext.get(cur.end)
        if nxt is not None and cur.phys + cur.size == nxt.phys and nxt.prot == cur.prot:
            cur.size += nxt.size
            del ext[nxt.iova]

    def unmap(self, iova: int, size: int) -> int:
        """Unmap the pages of ``[iova, iova + size)``; returns the number of bytes that were
        mapped there (iommu_unmap()).  Extents crossing the ends are split."""
        end = iova + size
        ext = self._ext
        removed = 0
        i = ext.bisect_right(iova) - 1
        if i < 0 or ext.peekitem(i)[1].end <= iova:
            i += 1
        doomed: list[Extent] = []
        while i < len(ext):
            e: Extent = ext.peekitem(i)[1]
            if e.iova >= end:
                break
            doomed.append(e)
            i += 1
        for e in doomed:
            del ext[e.iova]
            lo = max(e.iova, iova)
            hi = min(e.end, end)
            removed += hi - lo
            if e.iova < lo:
                ext[e.iova] = Extent(e.iova, lo - e.iova, e.phys, e.prot)
            if hi < e.end:
                ext[hi] = Extent(hi, e.end - hi, e.phys + (hi - e.iova), e.prot)
        return removed

    def clear(self) -> None:
        self._ext.clear()

    # -- the hardware walk ---------------------------------------------------------------
    def lookup(self, iova: int, size: int, write: bool) -> list[tuple[int, int]]:
        """The physical pieces of ``[iova, iova + size)``, coalesced; IommuFault if a byte is
        not mapped or lacks the permission (nothing is translated then)."""
        need = IOMMU_WRITE if write else IOMMU_READ
        ext = self._ext
        i = ext.bisect_right(iova) - 1
        if i < 0:
            raise IommuFault(f"IOVA {iova:#x} not mapped")
        out: list[tuple[int, int]] = []
        pos = iova
        end = iova + size
        n = len(ext)
        while pos < end:
            if i >= n:
                raise IommuFault(f"IOVA {pos:#x} not mapped")
            e: Extent = ext.peekitem(i)[1]
            if not (e.iova <= pos < e.end):
                raise IommuFault(f"IOVA {pos:#x} not mapped")
            if not e.prot & need:
                raise IommuFault(
                    f"IOVA {pos:#x} not {'writable' if write else 'readable'} (prot {e.prot})"
                )
            take = min(end, e.end) - pos
            phys = e.phys + (pos - e.iova)
            if out and out[-1][0] + out[-1][1] == phys:
                out[-1] = (out[-1][0], out[-1][1] + take)
            else:
                out.append((phys, take))
            pos += take
            i += 1
        return out

    # -- introspection -------------------------------------------------------------------
    def extents(self) -> list[tuple[int, int, int, int]]:
        """(iova, size, phys, prot) of every extent, in IOVA order."""
        return [(e.iova, e.size, e.phys, e.prot) for e in self._ext.values()]

    def mapped_bytes(self) -> int:
        return sum(e.size for e in self._ext.values())

    def _overlaps(self, iova: int, size: int) -> bool:
        ext = self._ext
        i = ext.bisect_left(iova + size) - 1
        if i < 0:
            return False
        return ext.peekitem(i)[1].end > iova


class PageTableIommu:
    """The x86 IOMMU (VT-d / AMD-Vi as Type1 sees it): context entries and domains.

    ``machine.iommu`` on x86; programmed by the Type1 backend (kernel/iommu/type1.py).
    """

    def __init__(self, machine: Machine | None = None) -> None:
        self.machine = machine
        self.context: dict[int, Domain] = {}  # rid -> domain
        # The [iommu] table's reserved regions of type "msi" ({start, last, type} tables,
        # validated by machine.py) are the interrupt windows.
        cfg = machine.iommu_config if machine is not None else {}
        windows = [(r["start"], r["last"]) for r in cfg.get("reserved", ()) if r["type"] == "msi"]
        #: inclusive (start, last) ranges where device writes are interrupt requests
        self.interrupt_windows: list[tuple[int, int]] = windows or [(X86_MSI_BASE, X86_MSI_LAST)]
        self._ndomains = 0

    def new_domain(self) -> Domain:
        """iommu_domain_alloc(): an empty page table."""
        self._ndomains += 1
        return Domain(f"domain{self._ndomains}")

    def attach(self, rid: int, domain: Domain) -> None:
        """Program the context entry of ``rid`` to point at ``domain``."""
        self.context[rid] = domain

    def detach(self, rid: int) -> None:
        """Clear the context entry of ``rid``: its DMA faults from now on."""
        self.context.pop(rid, None)

    def domain_of(self, rid: int) -> Domain | None:
        return self.context.get(rid)

    def translate(self, rid: int, iova: int, size: int, write: bool) -> list[tuple[int, int]]:
        """Translate a DMA of ``size`` bytes at ``iova`` by requester ``rid``.

        Returns the physical pieces ``[(phys, length), ...]`` (contiguous pieces coalesced);
        raises IommuFault for the whole transfer otherwise."""
        if size <= 0:
            return []
        if iova < 0 or iova + size > U64_END:
            raise IommuFault(f"IOVA {iova:#x}+{size:#x} overflows the address space")
        if write:
            for lo, last in self.interrupt_windows:
                if lo <= iova and iova + size - 1 <= last:
                    # Interrupt request: not translated (interrupt remapping, SPEC §9.2).
                    return [(iova, size)]
        domain = self.context.get(rid)
        if domain is None:
            raise IommuFault(f"requester {rid:#x} has no context entry")
        return domain.lookup(iova, size, write)
