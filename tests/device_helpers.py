"""Helpers of the vfio-pci device tests (SPEC §11, §13.5, §13.6): open a device the way a
client does, real user buffers mapped through Type1, and the device calls (region/irq info,
SET_IRQS, config and BAR access, eventfds)."""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from dataclasses import dataclass

from vfio_helpers import expect_errno  # noqa: F401 - re-exported for the tests

from vfiosim import Kernel
from vfiosim.uapi import pci_regs as R
from vfiosim.uapi import vfio as V

PAGE = 4096
RW = V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE
EDU = "0000:01:00.0"
DMACOPY = "0000:02:00.0"
CONFIG = V.VFIO_PCI_INDEX_TO_OFFSET(V.VFIO_PCI_CONFIG_REGION_INDEX)
BAR0 = V.VFIO_PCI_INDEX_TO_OFFSET(V.VFIO_PCI_BAR0_REGION_INDEX)

# edu registers (SPEC §11.1)
EDU_ID = 0x00
EDU_LIVENESS = 0x04
EDU_FACTORIAL = 0x08
EDU_STATUS = 0x20
EDU_IRQ_STATUS = 0x24
EDU_IRQ_RAISE = 0x60
EDU_IRQ_ACK = 0x64
EDU_DMA_SRC = 0x80
EDU_DMA_DST = 0x88
EDU_DMA_CNT = 0x90
EDU_DMA_CMD = 0x98
EDU_DMA_BUF = 0x40000
EDU_DMA_START, EDU_DMA_TO_RAM, EDU_DMA_IRQ = 0x1, 0x2, 0x4
EDU_DMA_DELAY_NS = 100_000_000



@dataclass
class Dev:
    """An open device: its kernel, container, group and device fds."""

    k: Kernel
    container: int
    group: int
    fd: int
    name: str

    @property
    def vdev(self):  # noqa: ANN201 - the model's VfioPciDevice (white-box checks)
        return self.k.core.device_driver(self.k.machine.device(self.name), None)

    @property
    def hw(self):  # noqa: ANN201 - the simulated PciFunction
        return self.k.machine.device(self.name).hw


def open_device(k: Kernel, name: str = EDU, iommu: int = V.VFIO_TYPE1v2_IOMMU) -> Dev:
    """open container and group, SET_CONTAINER, SET_IOMMU, GET_DEVICE_FD."""
    rec = k.machine.device(name)
    c = k.open("/dev/vfio/vfio", os.O_RDWR)
    g = k.open(f"/dev/vfio/{rec.group}", os.O_RDWR)
    k.ioctl(g, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(c))
    k.ioctl(c, V.VFIO_SET_IOMMU, iommu)
    d = k.ioctl(g, V.VFIO_GROUP_GET_DEVICE_FD, ctypes.create_string_buffer(name.encode()))
    return Dev(k, c, g, d, name)


class Buffer:
    """``size`` bytes of anonymous user memory at ``addr`` (an mmap object kept alive)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.map = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        self._anchor = ctypes.c_char.from_buffer(self.map)
        self.addr = ctypes.addressof(self._anchor)

    def __getitem__(self, key: slice | int) -> bytes | int:
        return self.map[key]

    def __setitem__(self, key: slice | int, value: bytes | int) -> None:
        self.map[key] = value  # type: ignore[index]

    def close(self) -> None:
        del self._anchor
        self.map.close()


def map_dma(dev: Dev, buf: Buffer, iova: int, flags: int = RW, size: int | None = None,
            offset: int = 0) -> None:
    m = V.vfio_iommu_type1_dma_map(argsz=ctypes.sizeof(V.vfio_iommu_type1_dma_map),
                                   flags=flags, vaddr=buf.addr + offset, iova=iova,
                                   size=buf.size - offset if size is None else size)
    dev.k.ioctl(dev.container, V.VFIO_IOMMU_MAP_DMA, m)


def region_info(dev: Dev, index: int, argsz: int | None = None) -> V.vfio_region_info:
    info = V.vfio_region_info(argsz=ctypes.sizeof(V.vfio_region_info) if argsz is None
                              else argsz, index=index)
    dev.k.ioctl(dev.fd, V.VFIO_DEVICE_GET_REGION_INFO, info)
    return info


def irq_info(dev: Dev, index: int) -> V.vfio_irq_info:
    info = V.vfio_irq_info(argsz=ctypes.sizeof(V.vfio_irq_info), index=index)
    dev.k.ioctl(dev.fd, V.VFIO_DEVICE_GET_IRQ_INFO, info)
    return info


def irq_set_bytes(flags: int, index: int, start: int, count: int, data: bytes = b"",
                  argsz: int | None = None) -> bytearray:
    """A ``struct vfio_irq_set`` with ``data[]`` (argsz defaults to 20 + len(data))."""
    if argsz is None:
        argsz = 20 + len(data)
    return bytearray(struct.pack("<IIIII", argsz, flags, index, start, count) + data)


def set_irqs(dev: Dev, flags: int, index: int, start: int, count: int, data: bytes = b"",
             argsz: int | None = None) -> int:
    return dev.k.ioctl(dev.fd, V.VFIO_DEVICE_SET_IRQS,
                       irq_set_bytes(flags, index, start, count, data, argsz))


def fds_data(*fds: int) -> bytes:
    return struct.pack(f"<{len(fds)}i", *fds)


TRIGGER_EVENTFD = V.VFIO_IRQ_SET_ACTION_TRIGGER | V.VFIO_IRQ_SET_DATA_EVENTFD
TRIGGER_NONE = V.VFIO_IRQ_SET_ACTION_TRIGGER | V.VFIO_IRQ_SET_DATA_NONE
TRIGGER_BOOL = V.VFIO_IRQ_SET_ACTION_TRIGGER | V.VFIO_IRQ_SET_DATA_BOOL


def set_trigger(dev: Dev, index: int, *fds: int, start: int = 0) -> int:
    return set_irqs(dev, TRIGGER_EVENTFD, index, start, len(fds), fds_data(*fds))


def disable_irqs(dev: Dev, index: int) -> int:
    return set_irqs(dev, TRIGGER_NONE, index, 0, 0)


class EventFds:
    """Non-blocking eventfds a test creates; closed at the end."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def new(self) -> int:
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.fds.append(fd)
        return fd

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def count(fd: int) -> int:
    """Read and reset an eventfd's counter (0 when it was not signalled)."""
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


def cfg_read(dev: Dev, off: int, size: int) -> int:
    return int.from_bytes(dev.k.pread(dev.fd, size, CONFIG + off), "little")


def cfg_write(dev: Dev, off: int, size: int, value: int) -> int:
    return dev.k.pwrite(dev.fd, value.to_bytes(size, "little"), CONFIG + off)


def bar_read(dev: Dev, off: int, size: int = 4, bar: int = 0) -> int:
    return int.from_bytes(dev.k.pread(dev.fd, size, V.VFIO_PCI_INDEX_TO_OFFSET(bar) + off),
                          "little")


def bar_write(dev: Dev, off: int, value: int, size: int = 4, bar: int = 0) -> int:
    return dev.k.pwrite(dev.fd, value.to_bytes(size, "little"),
                        V.VFIO_PCI_INDEX_TO_OFFSET(bar) + off)


def enable_bus_master(dev: Dev) -> None:
    cmd = cfg_read(dev, R.PCI_COMMAND, 2)
    cfg_write(dev, R.PCI_COMMAND, 2, cmd | R.PCI_COMMAND_MASTER)


def advance(dev: Dev, ns: int) -> None:
    dev.k.machine.clock.advance(ns)
