"""Device DMA through Type1 on x86 moving real bytes of this process (SPEC §10.2, §11.1,
§13.6): edu round trips, faults that move nothing and raise nothing, read-only mappings, bus
mastering, the deterministic clock, and a 1 MiB dmacopy copy signalling its MSI-X vector."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest
from device_helpers import (
    DMACOPY,
    EDU_DMA_BUF,
    EDU_DMA_CMD,
    EDU_DMA_CNT,
    EDU_DMA_DELAY_NS,
    EDU_DMA_DST,
    EDU_DMA_IRQ,
    EDU_DMA_SRC,
    EDU_DMA_START,
    EDU_DMA_TO_RAM,
    EDU_IRQ_STATUS,
    PAGE,
    RW,
    Buffer,
    EventFds,
    advance,
    bar_read,
    bar_write,
    count,
    enable_bus_master,
    open_device,
    set_trigger,
)

from vfiosim.uapi import vfio as V

MSI, MSIX = V.VFIO_PCI_MSI_IRQ_INDEX, V.VFIO_PCI_MSIX_IRQ_INDEX
SRC_IOVA, DST_IOVA = 0x10_0000, 0x20_0000


@pytest.fixture
def efds() -> Iterator[EventFds]:
    e = EventFds()
    yield e
    e.close()


@pytest.fixture
def bufs() -> Iterator[list[Buffer]]:
    made: list[Buffer] = []
    yield made
    for b in made:
        b.close()


def new_buf(bufs: list[Buffer], size: int, fill: bytes | None = None) -> Buffer:
    b = Buffer(size)
    if fill is not None:
        b[0:size] = (fill * (size // len(fill) + 1))[:size]
    bufs.append(b)
    return b


def map_dma(dev, buf: Buffer, iova: int, flags: int = RW) -> None:  # noqa: ANN001
    m = V.vfio_iommu_type1_dma_map(argsz=32, flags=flags, vaddr=buf.addr, iova=iova,
                                   size=buf.size)
    dev.k.ioctl(dev.container, V.VFIO_IOMMU_MAP_DMA, m)


def edu_dma(dev, src: int, dst: int, n: int, to_ram: bool, irq: bool = True) -> None:  # noqa: ANN001
    bar_write(dev, EDU_DMA_SRC, src)
    bar_write(dev, EDU_DMA_DST, dst)
    bar_write(dev, EDU_DMA_CNT, n)
    cmd = EDU_DMA_START | (EDU_DMA_TO_RAM if to_ram else 0) | (EDU_DMA_IRQ if irq else 0)
    bar_write(dev, EDU_DMA_CMD, cmd)


@pytest.fixture
def edu(x86, efds):  # noqa: ANN001, ANN201
    dev = open_device(x86)
    dev.msi_fd = efds.new()
    set_trigger(dev, MSI, dev.msi_fd)
    enable_bus_master(dev)
    return dev


def test_round_trip_ram_device_ram(edu, bufs) -> None:
    payload = os.urandom(PAGE)
    src = new_buf(bufs, PAGE)
    src[0:PAGE] = payload
    dst = new_buf(bufs, PAGE, b"\0")
    map_dma(edu, src, SRC_IOVA, V.VFIO_DMA_MAP_FLAG_READ)
    map_dma(edu, dst, DST_IOVA)
    edu_dma(edu, SRC_IOVA, EDU_DMA_BUF, PAGE, to_ram=False)
    advance(edu, EDU_DMA_DELAY_NS)
    assert bytes(edu.hw.dma_buf) == payload
    assert bar_read(edu, EDU_IRQ_STATUS) == 0x100
    assert count(edu.msi_fd) == 1
    bar_write(edu, 0x64, 0x100)
    edu_dma(edu, EDU_DMA_BUF, DST_IOVA, PAGE, to_ram=True)
    advance(edu, EDU_DMA_DELAY_NS)
    assert dst[0:PAGE] == payload  # real bytes in this process's memory
    assert count(edu.msi_fd) == 1
    assert edu.k.machine.faults == []


def test_partial_offsets(edu, bufs) -> None:
    src = new_buf(bufs, 2 * PAGE, b"0123456789")
    map_dma(edu, src, SRC_IOVA)
    edu_dma(edu, SRC_IOVA + PAGE - 8, EDU_DMA_BUF + 100, 16, to_ram=False)
    advance(edu, EDU_DMA_DELAY_NS)
    assert bytes(edu.hw.dma_buf[100:116]) == src[PAGE - 8:PAGE + 8]


def test_nothing_happens_until_the_clock_moves(edu, bufs) -> None:
    src = new_buf(bufs, PAGE, b"x")
    map_dma(edu, src, SRC_IOVA)
    before = bytes(edu.hw.dma_buf)
    edu_dma(edu, SRC_IOVA, EDU_DMA_BUF, PAGE, to_ram=False)
    assert bar_read(edu, EDU_DMA_CMD) & EDU_DMA_START
    advance(edu, EDU_DMA_DELAY_NS - 1)
    assert bytes(edu.hw.dma_buf) == before
    assert count(edu.msi_fd) == 0
    advance(edu, 1)
    assert bytes(edu.hw.dma_buf) == b"x" * PAGE
    assert bar_read(edu, EDU_DMA_CMD) & EDU_DMA_START == 0
    assert count(edu.msi_fd) == 1


def test_dma_to_unmapped_iova_moves_nothing(edu, bufs) -> None:
    """Canaries mapped on both sides of the hole stay intact; no MSI; a fault is recorded."""
    low = new_buf(bufs, PAGE, b"L")
    high = new_buf(bufs, PAGE, b"H")
    map_dma(edu, low, 0x30_0000 - PAGE)
    map_dma(edu, high, 0x30_0000 + PAGE)
    edu.hw.dma_buf[:] = b"D" * PAGE
    edu_dma(edu, EDU_DMA_BUF, 0x30_0000, PAGE, to_ram=True)
    advance(edu, EDU_DMA_DELAY_NS)
    assert low[0:PAGE] == b"L" * PAGE and high[0:PAGE] == b"H" * PAGE
    assert count(edu.msi_fd) == 0
    assert bar_read(edu, EDU_IRQ_STATUS) == 0
    assert bar_read(edu, EDU_DMA_CMD) & EDU_DMA_START == 0
    (f,) = edu.k.machine.faults
    assert (f.device, f.rid, f.iova, f.direction) == (edu.name, 0x100, 0x30_0000, "write")


def test_dma_straddling_into_unmapped_moves_nothing(edu, bufs) -> None:
    low = new_buf(bufs, PAGE, b"L")
    map_dma(edu, low, 0x30_0000 - PAGE)
    edu.hw.dma_buf[:] = b"D" * PAGE
    edu_dma(edu, EDU_DMA_BUF, 0x30_0000 - 16, 32, to_ram=True)  # half mapped
    advance(edu, EDU_DMA_DELAY_NS)
    assert low[0:PAGE] == b"L" * PAGE
    assert count(edu.msi_fd) == 0
    assert len(edu.k.machine.faults) == 1


def test_dma_from_unmapped_iova_moves_nothing(edu) -> None:
    edu.hw.dma_buf[:] = b"D" * PAGE
    edu_dma(edu, 0x40_0000, EDU_DMA_BUF, PAGE, to_ram=False)
    advance(edu, EDU_DMA_DELAY_NS)
    assert bytes(edu.hw.dma_buf) == b"D" * PAGE
    assert count(edu.msi_fd) == 0
    assert edu.k.machine.faults[0].direction == "read"


def test_read_only_mapping_blocks_device_writes(edu, bufs) -> None:
    ro = new_buf(bufs, PAGE, b"R")
    map_dma(edu, ro, DST_IOVA, V.VFIO_DMA_MAP_FLAG_READ)
    edu.hw.dma_buf[:] = b"W" * PAGE
    edu_dma(edu, EDU_DMA_BUF, DST_IOVA, PAGE, to_ram=True)
    advance(edu, EDU_DMA_DELAY_NS)
    assert ro[0:PAGE] == b"R" * PAGE
    assert count(edu.msi_fd) == 0
    assert edu.k.machine.faults[0].direction == "write"
    # reading it is allowed
    edu_dma(edu, DST_IOVA, EDU_DMA_BUF, PAGE, to_ram=False)
    advance(edu, EDU_DMA_DELAY_NS)
    assert bytes(edu.hw.dma_buf) == b"R" * PAGE
    assert count(edu.msi_fd) == 1


def test_bus_master_off_moves_nothing(edu, bufs) -> None:
    dst = new_buf(bufs, PAGE, b"\0")
    map_dma(edu, dst, DST_IOVA)
    edu.hw.dma_buf[:] = b"B" * PAGE
    edu.k.pwrite(edu.fd, (2).to_bytes(2, "little"), (7 << 40) + 4)  # memory only
    edu_dma(edu, EDU_DMA_BUF, DST_IOVA, PAGE, to_ram=True)
    advance(edu, EDU_DMA_DELAY_NS)
    assert dst[0:PAGE] == bytes(PAGE)
    assert count(edu.msi_fd) == 0
    assert bar_read(edu, EDU_DMA_CMD) & EDU_DMA_START == 0


def test_dma_address_above_mask_is_clamped(edu, bufs) -> None:
    src = new_buf(bufs, PAGE, b"c")
    map_dma(edu, src, SRC_IOVA)
    edu_dma(edu, SRC_IOVA | (1 << 28), EDU_DMA_BUF, 16, to_ram=False)
    advance(edu, EDU_DMA_DELAY_NS)
    assert bytes(edu.hw.dma_buf[:16]) == b"c" * 16
    assert any("clamping" in e for e in edu.k.machine.events)


def test_ten_rounds_mixing_good_and_faulting(edu, bufs) -> None:
    """[selftest "mix and match"]: a fault never disturbs the next good transfer."""
    src = new_buf(bufs, PAGE)
    dst = new_buf(bufs, PAGE, b"\0")
    map_dma(edu, src, SRC_IOVA)
    map_dma(edu, dst, DST_IOVA)
    faults = 0
    for i in range(10):
        payload = bytes([i]) * 64
        src[0:64] = payload
        good = i % 3 != 1
        edu_dma(edu, SRC_IOVA if good else 0x50_0000, EDU_DMA_BUF, 64, to_ram=False)
        advance(edu, EDU_DMA_DELAY_NS)
        if good:
            edu_dma(edu, EDU_DMA_BUF, DST_IOVA, 64, to_ram=True)
            advance(edu, EDU_DMA_DELAY_NS)
            assert dst[0:64] == payload
            assert count(edu.msi_fd) == 2
        else:
            faults += 1
            assert count(edu.msi_fd) == 0
        bar_write(edu, 0x64, 0x100)
    assert len(edu.k.machine.faults) == faults == 3


# ---------------------------------------------------------------------------------------------
# dmacopy


DMAC_CTRL, DMAC_RING_LO, DMAC_RING_HI, DMAC_RING_SIZE, DMAC_TAIL, DMAC_HEAD = (
    0x008, 0x010, 0x014, 0x018, 0x020, 0x024)
RING_IOVA, A_IOVA, B_IOVA = 0x100_0000, 0x200_0000, 0x400_0000
MIB = 1 << 20


def test_dmacopy_1mib_copy_signals_its_msix_vector(x86, efds, bufs) -> None:
    x86.process.cap_ipc_lock = True  # pin 2 MiB + a ring whatever RLIMIT_MEMLOCK says
    dev = open_device(x86, DMACOPY)
    fds = [efds.new() for _ in range(8)]
    set_trigger(dev, MSIX, *fds)
    enable_bus_master(dev)
    a = new_buf(bufs, MIB)
    a[0:MIB] = os.urandom(MIB)
    b = new_buf(bufs, MIB, b"\0")
    ring = new_buf(bufs, PAGE, b"\0")
    map_dma(dev, ring, RING_IOVA)
    map_dma(dev, a, A_IOVA, V.VFIO_DMA_MAP_FLAG_READ)
    map_dma(dev, b, B_IOVA)
    ring[0:24] = struct.pack("<QQIHH", A_IOVA, B_IOVA, MIB, 0x1, 5)
    bar_write(dev, DMAC_RING_LO, RING_IOVA & 0xFFFF_FFFF)
    bar_write(dev, DMAC_RING_HI, RING_IOVA >> 32)
    bar_write(dev, DMAC_RING_SIZE, 4)
    bar_write(dev, DMAC_CTRL, 1)
    bar_write(dev, DMAC_TAIL, 1)
    x86.machine.clock.run_until_idle()
    assert b[0:MIB] == a[0:MIB]
    assert struct.unpack_from("<II", ring[0:32], 24) == (1, MIB)  # DONE, bytes moved
    assert bar_read(dev, DMAC_HEAD) == 1
    assert [count(fd) for fd in fds] == [0, 0, 0, 0, 0, 1, 0, 0]
    assert x86.machine.faults == []


def test_dmacopy_fault_moves_nothing_no_vector(x86, efds, bufs) -> None:
    dev = open_device(x86, DMACOPY)
    fds = [efds.new() for _ in range(8)]
    set_trigger(dev, MSIX, *fds)
    enable_bus_master(dev)
    a = new_buf(bufs, PAGE, b"a")
    b = new_buf(bufs, PAGE, b"b")
    ring = new_buf(bufs, PAGE, b"\0")
    map_dma(dev, ring, RING_IOVA)
    map_dma(dev, a, A_IOVA)
    map_dma(dev, b, B_IOVA, V.VFIO_DMA_MAP_FLAG_READ)  # the destination is read-only
    ring[0:24] = struct.pack("<QQIHH", A_IOVA, B_IOVA, PAGE, 0x1, 2)
    bar_write(dev, DMAC_RING_LO, RING_IOVA)
    bar_write(dev, DMAC_RING_SIZE, 4)
    bar_write(dev, DMAC_CTRL, 1)
    bar_write(dev, DMAC_TAIL, 1)
    x86.machine.clock.run_until_idle()
    assert b[0:PAGE] == b"b" * PAGE
    status, moved = struct.unpack_from("<II", ring[0:32], 24)
    assert status & 0x8000_0000 and moved == 0
    assert x86.machine.faults[0].direction == "write"
    # the descriptor asked for an interrupt: a failed copy still completes it (dmacopy.md)
    assert [count(fd) for fd in fds] == [0, 0, 1, 0, 0, 0, 0, 0]
