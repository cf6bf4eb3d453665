"""Benchmark: dmacopy copy throughput against memmove, and MSI latency to the eventfd.

Prints one JSON object:

* ``throughput``: for 4 KiB, 64 KiB and 1 MiB transfers, dmacopy's bytes/s through the whole
  stack (VFIO Type1 mappings on the x86 preset, the ring and doorbell driven with pwrite on
  the device fd, the completion MSI-X to an eventfd) divided by ``ctypes.memmove`` of the same
  transfers in the same run. Each round posts ``batch`` descriptors (interrupt on the last),
  rings the doorbell, runs the manual clock and reads the eventfd. Target: ratio >= 0.5 at
  1 MiB.
* ``msi_latency_us``: median and p99 of the time from the device's MSI write (a 4-byte DMA
  write to the x86 doorbell through the IOMMU) to the eventfd being readable (poll), and of
  the whole path from the doorbell register (pwrite of TAIL) with the real clock.
  Target: median <= 20 µs for the first.

``--machine p4080`` (or t4240) runs the same through the FSL PAMU backend: 16 MiB windows of a
2 GiB aperture (the seed's flow: GEOMETRY, WINDOWS, MAP_DMA, then MSI-X through the bank the
kernel mapped in a top window), with ``contiguous_memory`` so ordinary memory can back the
windows.  ``--fake-iommu`` measures the hardware alone with an identity IOMMU (no VFIO), as the
unit tests do; the JSON says which was used.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import select
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

from vfiosim.hw import dmacopy as D

MIB = 1 << 20
RING_IOVA = 0x1000_0000
COMPL_IOVA = 0x1010_0000
SRC_IOVA = 0x2000_0000
DST_IOVA = 0x6000_0000
RING_ENTRIES = 256


class Buf:
    def __init__(self, size: int) -> None:
        self.size = size
        self.map = mmap.mmap(-1, size)
        self.map[:] = os.urandom(min(size, 4096)) * (size // min(size, 4096))
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.map))


class VfioRig:
    """The dmacopy of the x86 preset, driven through the in-process VFIO API."""

    mode = "vfio type1v2 (Kernel.from_preset('x86'), device fd pread/pwrite, SET_IRQS MSI-X)"

    def __init__(self, clock: str, span: int) -> None:
        import vfiosim
        from vfiosim.uapi import vfio as V

        self.V = V
        self.k = k = vfiosim.Kernel.from_preset("x86", clock=clock)
        name = next(d.name for d in k.machine.devices if d.model == "dmacopy")
        rec = k.machine.device(name)
        self.hw = rec.hw
        c = k.open("/dev/vfio/vfio", os.O_RDWR)
        g = k.open(f"/dev/vfio/{rec.group}", os.O_RDWR)
        k.ioctl(g, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(c))
        k.ioctl(c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
        self.fd = k.ioctl(g, V.VFIO_GROUP_GET_DEVICE_FD, ctypes.create_string_buffer(name.encode()))
        self.ring, self.compl = Buf(RING_ENTRIES * 32), Buf(4096)
        self.src, self.dst = Buf(span), Buf(span)
        rw = V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE
        for buf, iova in ((self.ring, RING_IOVA), (self.compl, COMPL_IOVA),
                          (self.src, SRC_IOVA), (self.dst, DST_IOVA)):
            m = V.vfio_iommu_type1_dma_map(argsz=ctypes.sizeof(V.vfio_iommu_type1_dma_map),
                                           flags=rw, vaddr=buf.addr, iova=iova, size=buf.size)
            k.ioctl(c, V.VFIO_IOMMU_MAP_DMA, m)
        self._enable_device()

    def _enable_device(self) -> None:
        """Bus mastering on, MSI-X vector 0 to a fresh eventfd (SET_IRQS)."""
        from vfiosim.uapi import pci_regs as R

        V, k = self.V, self.k
        cfg = V.VFIO_PCI_INDEX_TO_OFFSET(V.VFIO_PCI_CONFIG_REGION_INDEX)
        cmd = int.from_bytes(k.pread(self.fd, 2, cfg + R.PCI_COMMAND), "little")
        cmd |= R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER
        k.pwrite(self.fd, cmd.to_bytes(2, "little"), cfg + R.PCI_COMMAND)
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        flags = V.VFIO_IRQ_SET_ACTION_TRIGGER | V.VFIO_IRQ_SET_DATA_EVENTFD
        arg = bytearray(struct.pack("<IIIIIi", 24, flags, V.VFIO_PCI_MSIX_IRQ_INDEX, 0, 1,
                                    self.efd))
        k.ioctl(self.fd, V.VFIO_DEVICE_SET_IRQS, arg)
        self.bar0 = V.VFIO_PCI_INDEX_TO_OFFSET(V.VFIO_PCI_BAR0_REGION_INDEX)
        self.clock = k.machine.clock
        self.lock = k.machine.lock

    def w(self, off: int, value: int) -> None:
        self.k.pwrite(self.fd, value.to_bytes(4, "little"), self.bar0 + off)

    def close(self) -> None:
        os.close(self.efd)
        self.k.shutdown()


class _View:
    """A slice of a larger buffer that looks like a Buf to the ring code."""

    def __init__(self, buf: Buf, offset: int, size: int) -> None:
        self.map = memoryview(buf.map)[offset:offset + size]
        self.addr, self.size = buf.addr + offset, size


class PamuRig(VfioRig):
    """The dmacopy of a PAMU preset, through the FSL PAMU backend (issue: PAMU windows)."""

    WINDOW = 16 * MIB
    APERTURE = 2048 * MIB

    def __init__(self, clock: str, span: int, machine: str = "p4080") -> None:
        import vfiosim
        from vfiosim.uapi import vfio as V
        from vfiosim.uapi import vfio_pamu as P

        self.mode = (f"vfio fsl_pamu on {machine} ({self.APERTURE >> 20} MiB aperture, "
                     f"{self.WINDOW >> 20} MiB windows, contiguous_memory, MSI-X via bank window)")
        self.V = V
        self.k = k = vfiosim.Kernel.from_preset(machine, clock=clock, contiguous_memory=True)
        name = next(d.name for d in k.machine.devices if d.model == "dmacopy")
        rec = k.machine.device(name)
        self.hw = rec.hw
        c = k.open("/dev/vfio/vfio", os.O_RDWR)
        g = k.open(f"/dev/vfio/{rec.group}", os.O_RDWR)
        k.ioctl(g, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(c))
        k.ioctl(c, V.VFIO_SET_IOMMU, P.VFIO_FSL_PAMU_IOMMU)
        attr = P.vfio_pamu_attr(argsz=ctypes.sizeof(P.vfio_pamu_attr),
                                attribute=P.VFIO_ATTR_GEOMETRY)
        attr.attr_info.attr.aperture_start = 0
        attr.attr_info.attr.aperture_end = self.APERTURE - 1
        k.ioctl(c, P.VFIO_IOMMU_PAMU_SET_ATTR, attr)
        attr = P.vfio_pamu_attr(argsz=ctypes.sizeof(P.vfio_pamu_attr),
                                attribute=P.VFIO_ATTR_WINDOWS)
        attr.attr_info.windows = self.APERTURE // self.WINDOW
        k.ioctl(c, P.VFIO_IOMMU_PAMU_SET_ATTR, attr)
        self.fd = k.ioctl(g, V.VFIO_GROUP_GET_DEVICE_FD, ctypes.create_string_buffer(name.encode()))
        # One window holds the ring and the completion area (RING_IOVA and COMPL_IOVA share it).
        assert span <= self.WINDOW and COMPL_IOVA - RING_IOVA < self.WINDOW
        self._ctl = Buf(self.WINDOW)
        self.ring = _View(self._ctl, 0, RING_ENTRIES * 32)
        self.compl = _View(self._ctl, COMPL_IOVA - RING_IOVA, 4096)
        self.src, self.dst = Buf(self.WINDOW), Buf(self.WINDOW)
        rw = V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE
        for buf, iova in ((self._ctl, RING_IOVA), (self.src, SRC_IOVA), (self.dst, DST_IOVA)):
            m = V.vfio_iommu_type1_dma_map(argsz=ctypes.sizeof(V.vfio_iommu_type1_dma_map),
                                           flags=rw, vaddr=buf.addr, iova=iova, size=buf.size)
            k.ioctl(c, V.VFIO_IOMMU_MAP_DMA, m)
        self._enable_device()

    def close(self) -> None:
        self.ring.map.release()
        self.compl.map.release()
        super().close()


class FakeRig:
    """The device alone: a fake machine with an identity IOMMU (tests/hw_helpers.py)."""

    mode = "fake identity IOMMU (hardware only, no VFIO)"

    def __init__(self, clock: str, span: int) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from hw_helpers import make_machine

        from vfiosim.hw.clock import Clock
        from vfiosim.kernel.uaccess import LocalMemory
        from vfiosim.uapi import pci_regs as R

        m = make_machine()
        m.clock = Clock(clock, m.lock)
        self.m = m
        self.hw = D.DmaCopy(m, "0000:02:00.0", 0x200)
        self.hw.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER)
        mm = LocalMemory()
        self.ring, self.compl = Buf(RING_ENTRIES * 32), Buf(4096)
        self.src, self.dst = Buf(span), Buf(span)
        for buf, iova in ((self.ring, RING_IOVA), (self.compl, COMPL_IOVA),
                          (self.src, SRC_IOVA), (self.dst, DST_IOVA)):
            m.iommu.map(iova, m.bus.pin(mm, buf.addr, buf.size))
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        vec = m.msi.alloc()
        m.msi.set_handler(vec, lambda: os.eventfd_write(self.efd, 1))
        self.hw.msi_set_enabled("msix", 1)
        self.hw.msi_program(0, vec.address, vec.data)
        self.clock, self.lock = m.clock, m.lock

    def w(self, off: int, value: int) -> None:
        with self.lock:
            self.hw.bar_write(0, off, 4, value)

    def close(self) -> None:
        os.close(self.efd)
        self.clock.stop()


def setup_ring(rig: Any) -> None:
    rig.w(D.DMAC_REG_RING_LO, RING_IOVA)
    rig.w(D.DMAC_REG_RING_HI, 0)
    rig.w(D.DMAC_REG_RING_SIZE, RING_ENTRIES)
    rig.w(D.DMAC_REG_COMPL_LO, COMPL_IOVA)
    rig.w(D.DMAC_REG_CTRL, D.DMAC_CTRL_ENABLE)
    rig.tail = 0


def run_batch(rig: Any, size: int, batch: int) -> None:
    for i in range(batch):
        flags = D.DMAC_DESC_F_INT if i == batch - 1 else 0
        off = i * size
        desc = D.pack_descriptor(SRC_IOVA + off, DST_IOVA + off, size, flags, 0)
        rig.ring.map[32 * rig.tail : 32 * rig.tail + 32] = desc
        rig.tail = (rig.tail + 1) % RING_ENTRIES
    rig.w(D.DMAC_REG_TAIL, rig.tail)
    rig.clock.run_until_idle()
    if os.eventfd_read(rig.efd) != 1:
        raise SystemExit("completion MSI-X not delivered")


def throughput(rig: Any, size: int, total: int) -> dict[str, Any]:
    batch = max(1, min(RING_ENTRIES - 1, total // size, rig.src.size // size))
    rounds = max(3, total // (batch * size))
    run_batch(rig, size, batch)  # warm up
    if rig.dst.map[: batch * size] != rig.src.map[: batch * size]:
        raise SystemExit("dmacopy copied the wrong bytes")
    t0 = time.perf_counter()
    for _ in range(rounds):
        run_batch(rig, size, batch)
    t_dev = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(rounds):
        for i in range(batch):
            ctypes.memmove(rig.dst.addr + i * size, rig.src.addr + i * size, size)
    t_mem = time.perf_counter() - t0
    moved = rounds * batch * size
    return {
        "size": size,
        "descriptors_per_doorbell": batch,
        "bytes": moved,
        "dmacopy_GBps": round(moved / t_dev / 1e9, 3),
        "memmove_GBps": round(moved / t_mem / 1e9, 3),
        "ratio": round(t_mem / t_dev, 3),
    }


def readable(fd: int, timeout_ms: int = 5000) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(timeout_ms))


def msi_latency(rig: Any, n: int) -> dict[str, float]:
    lat = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        with rig.lock:
            rig.hw.raise_msi(0)
        if not readable(rig.efd):
            raise SystemExit("MSI not delivered")
        lat.append(time.perf_counter_ns() - t0)
        os.eventfd_read(rig.efd)
    return _stats(lat)


def doorbell_latency(rig: Any, n: int) -> dict[str, float]:
    lat = []
    for _ in range(n):
        desc = D.pack_descriptor(SRC_IOVA, DST_IOVA, 64, D.DMAC_DESC_F_INT, 0)
        rig.ring.map[32 * rig.tail : 32 * rig.tail + 32] = desc
        rig.tail = (rig.tail + 1) % RING_ENTRIES
        t0 = time.perf_counter_ns()
        rig.w(D.DMAC_REG_TAIL, rig.tail)
        if not readable(rig.efd):
            raise SystemExit("completion MSI-X not delivered")
        lat.append(time.perf_counter_ns() - t0)
        os.eventfd_read(rig.efd)
    return _stats(lat)


def _stats(ns: list[int]) -> dict[str, float]:
    ns.sort()
    return {
        "median_us": round(statistics.median(ns) / 1000, 2),
        "p99_us": round(ns[int(len(ns) * 0.99) - 1] / 1000, 2),
        "samples": len(ns),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fake-iommu", action="store_true", help="hardware only, identity IOMMU")
    ap.add_argument("--machine", default="x86", choices=("x86", "p4080", "t4240"),
                    help="x86 (Type1) or a PAMU preset")
    ap.add_argument("--total-mib", type=int, default=64, help="bytes per size to copy (MiB)")
    args = ap.parse_args()
    if args.fake_iommu:
        cls: Any = FakeRig
    elif args.machine == "x86":
        cls = VfioRig
    else:
        def cls(clock: str, span: int) -> PamuRig:
            return PamuRig(clock, span, args.machine)
    span = 16 * MIB
    rig = cls("manual", span)
    setup_ring(rig)
    out: dict[str, Any] = {"stack": rig.mode, "python": sys.version.split()[0]}
    out["throughput"] = [throughput(rig, s, args.total_mib * MIB) for s in
                         (4096, 64 * 1024, MIB)]
    out["msi_latency_us"] = {"device_msi_write_to_eventfd": msi_latency(rig, 2000)}
    rig.close()
    real = cls("real", MIB)
    setup_ring(real)
    out["msi_latency_us"]["tail_doorbell_to_eventfd_real_clock"] = doorbell_latency(real, 500)
    real.close()
    out["targets"] = {
        "ratio_at_1MiB": ">= 0.5",
        "met_ratio": out["throughput"][-1]["ratio"] >= 0.5,
        "msi_median_us": "<= 20",
        "met_msi": out["msi_latency_us"]["device_msi_write_to_eventfd"]["median_us"] <= 20,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
