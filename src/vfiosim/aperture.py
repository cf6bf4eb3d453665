"""A picture of a PAMU aperture: which window maps what (RAM or an MSI bank).

Used by ``vfiosim demo`` and ``vfiosim aperture``.  It reads the backend's window table
(:meth:`vfiosim.kernel.iommu.pamu.PamuBackend.window_table`), which reflects what was programmed
into the PAACE/SPAACE entries, and the hardware's own decode of the primary entry.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from typing import TYPE_CHECKING, Any

from vfiosim.uapi import vfio as V
from vfiosim.uapi import vfio_pamu as P

if TYPE_CHECKING:
    from vfiosim.api import Kernel

_PROT = {0: "--", 1: "r-", 2: "-w", 3: "rw"}


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def backend_of(k: Kernel, container_fd: int) -> Any:
    f = k._file(container_fd)
    backend = getattr(getattr(f, "container", None), "backend", None)
    if backend is None or not hasattr(backend, "window_table"):
        raise ValueError("not a PAMU container")
    return backend


def describe_windows(k: Kernel, container_fd: int) -> str:
    """The window table of a PAMU container as text: a bar, then one line per window used."""
    b = backend_of(k, container_fd)
    rows = b.window_table()
    if not rows:
        return "windows not configured"
    bar = "".join({"free": ".", "dma": "D", "msi": "M"}[r.kind] for r in rows)
    lines = [
        f"aperture [{b.aperture_start:#x}, {b.aperture_end:#x}], {len(rows)} windows of "
        f"{_size(b.window_size)}, domain {'enabled' if b.enabled else 'disabled'}",
        f"window 0 |{bar}| window {len(rows) - 1}   (D = DMA, M = MSI bank, . = free)",
    ]
    for r in rows:
        if r.kind == "free":
            continue
        what = "RAM" if r.kind == "dma" else f"MSI bank {r.bank}"
        mapped = _size(r.mapped_size) if r.mapped_size else "not valid"
        lines.append(
            f"  window {r.index:>3}  iova {r.iova:#012x} -> phys {r.paddr:#012x}  "
            f"{mapped:>8} {_PROT.get(r.prot or 0, '??')}  {what}")
    return "\n".join(lines)


def parse_size(text: str) -> int:
    """"32M", "4K", "1G", "0x2000000" -> bytes; ValueError otherwise."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    if mult != 1:
        t = t[:-1]
    try:
        n = int(t, 0) * mult
    except ValueError:
        raise ValueError(f"not a size: {text!r} (examples: 32M, 4K, 0x2000000)") from None
    if n <= 0:
        raise ValueError(f"not a positive size: {text!r}")
    return n


def picture(machine: str, aperture_size: int, windows: int, maps: list[int],
            msi_mode: str = "auto") -> str:
    """Run the seed's setup on ``machine`` with the given geometry and DMA mappings (mapped
    from the bottom of the aperture up) and draw the resulting aperture."""
    from vfiosim.api import Kernel

    k = Kernel.from_preset(machine, clock="manual", contiguous_memory=True, msi_mode=msi_mode)
    bufs: list[mmap.mmap] = []
    try:
        if k.machine.kind != "fsl_pamu":
            raise ValueError(f"machine {machine!r} has no PAMU; choose p4080 or t4240")
        edu = next(d for d in k.devices() if d.model == "edu")
        c = k.open("/dev/vfio/vfio", os.O_RDWR)
        g = k.open(f"/dev/vfio/{edu.group}", os.O_RDWR)
        k.ioctl(g, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(c))
        k.ioctl(c, V.VFIO_SET_IOMMU, P.VFIO_FSL_PAMU_IOMMU)
        attr = P.vfio_pamu_attr(argsz=ctypes.sizeof(P.vfio_pamu_attr),
                                attribute=P.VFIO_ATTR_GEOMETRY)
        attr.attr_info.attr.aperture_start = 0
        attr.attr_info.attr.aperture_end = aperture_size - 1
        k.ioctl(c, P.VFIO_IOMMU_PAMU_SET_ATTR, attr)
        attr = P.vfio_pamu_attr(argsz=ctypes.sizeof(P.vfio_pamu_attr),
                                attribute=P.VFIO_ATTR_WINDOWS)
        attr.attr_info.windows = windows
        k.ioctl(c, P.VFIO_IOMMU_PAMU_SET_ATTR, attr)
        iova = 0
        notes = []
        for size in maps:
            m = mmap.mmap(-1, size)
            bufs.append(m)
            vaddr = ctypes.addressof(ctypes.c_char.from_buffer(m))
            dma = V.vfio_iommu_type1_dma_map(
                argsz=ctypes.sizeof(V.vfio_iommu_type1_dma_map),
                flags=V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE,
                vaddr=vaddr, iova=iova, size=size)
            try:
                k.ioctl(c, V.VFIO_IOMMU_MAP_DMA, dma)
                notes.append(f"MAP_DMA iova {iova:#x} size {_size(size)}: 0")
                iova += size
            except OSError as e:
                notes.append(f"MAP_DMA iova {iova:#x} size {_size(size)}: "
                             f"{os.strerror(e.errno or 0)} (errno {e.errno})")
        banks = k.ioctl(c, P.VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT)
        head = (f"{machine}: {banks} MSI banks, msi_mode {msi_mode}, aperture "
                f"{_size(aperture_size)} in {windows} windows")
        return "\n".join([head, *notes, describe_windows(k, c)])
    finally:
        k.shutdown()
        for m in bufs:
            try:
                m.close()
            except BufferError:
                pass
