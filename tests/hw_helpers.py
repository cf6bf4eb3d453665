"""Fakes for the hardware unit tests: a small machine and an IOMMU that does not depend on
Type1 or PAMU (hw/ is tested on its own; the real IOMMUs have their own tests)."""

from __future__ import annotations

import ctypes
import mmap
import threading
from types import SimpleNamespace
from typing import Any

from vfiosim.hw.clock import Clock
from vfiosim.hw.iommu import IommuFault
from vfiosim.hw.irq import IrqDomain
from vfiosim.hw.memory import PhysBus
from vfiosim.hw.x86_msi import X86_MSI_BASE, X86_MSI_SIZE, X86Msi
from vfiosim.kernel.uaccess import LocalMemory


class FakeIommu:
    """iova → phys table of (iova, phys, size, write-allowed); anything else faults.

    The x86 interrupt window passes untranslated (SPEC §9.2). ``calls`` records every
    translate() so tests can see that MSIs and DMA really went through it.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, int, bool]] = []
        self.calls: list[tuple[int, int, int, bool]] = []

    def map(self, iova: int, ranges: list[tuple[int, int]], write: bool = True) -> int:
        """Map ``ranges`` (as PhysBus.pin returns them) one after the other from ``iova``."""
        for phys, n in ranges:
            last = self.entries[-1] if self.entries else None
            if last and (last[0] + last[2], last[1] + last[2], last[3]) == (iova, phys, write):
                self.entries[-1] = (last[0], last[1], last[2] + n, write)  # one extent
            else:
                self.entries.append((iova, phys, n, write))
            iova += n
        return iova

    def identity(self, ranges: list[tuple[int, int]], write: bool = True) -> None:
        for phys, n in ranges:
            self.entries.append((phys, phys, n, write))

    def translate(self, rid: int, iova: int, size: int, write: bool) -> list[tuple[int, int]]:
        self.calls.append((rid, iova, size, write))
        if X86_MSI_BASE <= iova and iova + size <= X86_MSI_BASE + X86_MSI_SIZE:
            return [(iova, size)]
        out: list[tuple[int, int]] = []
        pos, end = iova, iova + size
        while pos < end:
            for e_iova, phys, n, w in self.entries:
                if e_iova <= pos < e_iova + n:
                    if write and not w:
                        raise IommuFault("permission")
                    take = min(end, e_iova + n) - pos
                    out.append((phys + pos - e_iova, take))
                    pos += take
                    break
            else:
                raise IommuFault("not mapped")
        return out


def make_machine(**options: Any) -> SimpleNamespace:
    opts = SimpleNamespace(
        edu_dma_mask_bits=28,
        edu_dma_delay_ms=100.0,
        edu_factorial_delay_ms=1.0,
        dmacopy_delay_us=0.0,
    )
    for k, v in options.items():
        setattr(opts, k, v)
    m = SimpleNamespace(lock=threading.RLock(), faults=[], events=[], options=opts)
    m.log = m.events.append
    m.record_fault = m.faults.append
    m.clock = Clock("manual", m.lock)
    m.bus = PhysBus(m)
    m.irq = IrqDomain(m)
    m.iommu = FakeIommu()
    m.msi = X86Msi(m)
    return m


class Buffer:
    """An anonymous mmap with its real address (what MAP_DMA's vaddr would be)."""

    def __init__(self, size: int, fill: int | None = None) -> None:
        self.size = size
        self.map = mmap.mmap(-1, size)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        if fill is not None:
            self.map[:] = bytes([fill]) * size

    def __getitem__(self, s: slice) -> bytes:
        return self.map[s]

    def __setitem__(self, s: slice, data: bytes) -> None:
        self.map[s] = data


class CountingMemory(LocalMemory):
    """LocalMemory that counts the fast-path calls."""

    def __init__(self) -> None:
        super().__init__()
        self.copies = 0
        self.reads = 0
        self.writes = 0

    def copy(self, dst: int, src: int, size: int) -> None:
        self.copies += 1
        super().copy(dst, src, size)

    def dma_read(self, addr: int, size: int) -> bytes:
        self.reads += 1
        return super().dma_read(addr, size)

    def dma_write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        super().dma_write(addr, data)


def msi_counter(m: SimpleNamespace) -> tuple[Any, list[int]]:
    """Allocate an x86 MSI vector whose handler counts into the returned list."""
    hits: list[int] = []
    vec = m.msi.alloc()
    m.msi.set_handler(vec, lambda: hits.append(1))
    return vec, hits
