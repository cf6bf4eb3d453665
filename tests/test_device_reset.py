"""VFIO_DEVICE_RESET, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO and VFIO_DEVICE_PCI_HOT_RESET
(SPEC §11.4, §13.6)."""

from __future__ import annotations

import ctypes
import errno
import struct
from collections.abc import Iterator

import pytest
from device_helpers import (
    DMACOPY,
    EDU,
    EDU_DMA_BUF,
    EDU_DMA_CMD,
    EDU_DMA_CNT,
    EDU_DMA_DELAY_NS,
    EDU_DMA_DST,
    EDU_DMA_SRC,
    EDU_DMA_START,
    EDU_FACTORIAL,
    EDU_IRQ_RAISE,
    EDU_IRQ_STATUS,
    EDU_LIVENESS,
    Buffer,
    EventFds,
    advance,
    bar_read,
    bar_write,
    cfg_read,
    cfg_write,
    count,
    enable_bus_master,
    expect_errno,
    map_dma,
    open_device,
    set_trigger,
)

from vfiosim.uapi import pci_regs as R
from vfiosim.uapi import vfio as V

MSI = V.VFIO_PCI_MSI_IRQ_INDEX


@pytest.fixture
def efds() -> Iterator[EventFds]:
    e = EventFds()
    yield e
    e.close()


def reset(dev) -> int:  # noqa: ANN001
    return dev.k.ioctl(dev.fd, V.VFIO_DEVICE_RESET, 0)


def test_reset_returns_registers_to_power_on(x86) -> None:
    dev = open_device(x86, EDU)
    bar_write(dev, EDU_LIVENESS, 0x1234)
    bar_write(dev, EDU_FACTORIAL, 5)
    bar_write(dev, EDU_DMA_SRC, 0x1000)
    bar_write(dev, EDU_IRQ_RAISE, 0x40)
    assert bar_read(dev, EDU_IRQ_STATUS) == 0x40
    assert bar_read(dev, EDU_LIVENESS) == 0xFFFF_EDCB
    assert cfg_read(dev, R.PCI_STATUS, 2) & R.PCI_STATUS_INTERRUPT
    assert reset(dev) == 0
    assert bar_read(dev, EDU_LIVENESS) == 0  # 0 before any write (SPEC §11.1)
    assert bar_read(dev, EDU_FACTORIAL) == 0
    assert bar_read(dev, EDU_DMA_SRC) == 0
    assert bar_read(dev, EDU_IRQ_STATUS) == 0
    assert cfg_read(dev, R.PCI_STATUS, 2) == 0x0010  # INTx deasserted


def test_reset_keeps_virtual_config_and_command(x86) -> None:
    dev = open_device(x86, EDU)
    cfg_write(dev, R.PCI_INTERRUPT_LINE, 1, 7)
    cfg_write(dev, R.PCI_BASE_ADDRESS_0, 4, 0xC000_0000)
    enable_bus_master(dev)
    cfg_write(dev, R.PCI_CACHE_LINE_SIZE, 1, 0x20)
    reset(dev)
    assert cfg_read(dev, R.PCI_INTERRUPT_LINE, 1) == 7
    assert cfg_read(dev, R.PCI_BASE_ADDRESS_0, 4) == 0xC000_0000
    assert cfg_read(dev, R.PCI_COMMAND, 2) == 0x0006  # saved and restored around the reset
    assert dev.hw.bus_master
    assert cfg_read(dev, R.PCI_CACHE_LINE_SIZE, 1) == 0x20


def test_reset_keeps_msi_configuration(x86, efds) -> None:
    dev = open_device(x86, EDU)
    fd = efds.new()
    set_trigger(dev, MSI, fd)
    enable_bus_master(dev)
    reset(dev)
    assert dev.hw.msi_kind == "msi"
    bar_write(dev, EDU_IRQ_RAISE, 1)
    assert count(fd) == 1


def test_reset_cancels_running_dma(x86) -> None:
    dev = open_device(x86, EDU)
    buf = Buffer(4096)
    buf[0:4] = b"abcd"
    map_dma(dev, buf, 0x10_0000)
    enable_bus_master(dev)
    bar_write(dev, EDU_DMA_SRC, 0x10_0000)
    bar_write(dev, EDU_DMA_DST, EDU_DMA_BUF)
    bar_write(dev, EDU_DMA_CNT, 4)
    bar_write(dev, EDU_DMA_CMD, EDU_DMA_START)
    before = bytes(dev.hw.dma_buf[:4])
    reset(dev)
    advance(dev, 2 * EDU_DMA_DELAY_NS)
    assert bytes(dev.hw.dma_buf[:4]) == before
    assert bar_read(dev, EDU_DMA_CMD) == 0


def test_reset_without_support_einval(x86) -> None:
    dev = open_device(x86, EDU)
    dev.vdev.reset_works = False  # a device whose function reset failed at open
    expect_errno(errno.EINVAL, reset, dev)
    info = V.vfio_device_info(argsz=24)
    x86.ioctl(dev.fd, V.VFIO_DEVICE_GET_INFO, info)
    assert info.flags == V.VFIO_DEVICE_FLAGS_PCI


# ---------------------------------------------------------------------------------------------
# Hot reset INFO


def hot_reset_info(dev, argsz: int, buflen: int | None = None) -> bytearray:  # noqa: ANN001
    buf = bytearray(b"\xaa") * (argsz if buflen is None else buflen)
    buf[0:4] = argsz.to_bytes(4, "little")
    dev.k.ioctl(dev.fd, V.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf)
    return buf


def test_hot_reset_info_bare_header_enospc(x86) -> None:
    dev = open_device(x86, EDU)
    buf = bytearray(b"\xaa") * 24
    buf[0:4] = (12).to_bytes(4, "little")
    expect_errno(errno.ENOSPC, x86.ioctl, dev.fd, V.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf)
    assert struct.unpack_from("<III", buf) == (12, 0, 1)  # header written before ENOSPC
    assert buf[12:] == b"\xaa" * 12  # nothing past argsz


def test_hot_reset_info_enospc_writes_no_device(tmp_path) -> None:
    """``vfio_pci_ioctl_get_pci_hot_reset_info()`` counts first and, when the devices do not
    all fit, writes only the header: no partial device array."""
    from vfiosim import Kernel

    f = tmp_path / "shared-bus.toml"
    f.write_text(
        '[machine]\nname = "shared-bus"\niommu = "type1"\n'
        '[[device]]\nname = "0000:01:00.0"\nmodel = "edu"\ngroup = 1\n'
        '[[device]]\nname = "0000:01:01.0"\nmodel = "edu"\ngroup = 2\n'
    )
    k = Kernel.from_file(f, clock="manual")
    try:
        dev = open_device(k, "0000:01:00.0")
        buf = bytearray(b"\xaa") * 36
        buf[0:4] = (20).to_bytes(4, "little")
        expect_errno(errno.ENOSPC, k.ioctl, dev.fd, V.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf)
        assert struct.unpack_from("<III", buf) == (20, 0, 2)
        assert buf[12:] == b"\xaa" * 24  # no device entry written
        buf = hot_reset_info(dev, 28, 36)
        assert struct.unpack_from("<III", buf) == (28, 0, 2)
        deps = [V.vfio_pci_dependent_device.from_buffer_copy(buf[o:o + 8]) for o in (12, 20)]
        assert [(d.group_id, d.bus, d.devfn) for d in deps] == [(1, 1, 0), (2, 1, 8)]
    finally:
        k.shutdown()


def test_hot_reset_info_argsz(x86) -> None:
    dev = open_device(x86, EDU)
    expect_errno(errno.EINVAL, hot_reset_info, dev, 11, 16)


@pytest.mark.parametrize("name,group,bus", [(EDU, 1, 1), (DMACOPY, 2, 2)])
def test_hot_reset_info_devices(x86, name: str, group: int, bus: int) -> None:
    dev = open_device(x86, name)
    buf = hot_reset_info(dev, 20, 28)
    assert struct.unpack_from("<III", buf) == (20, 0, 1)
    dep = V.vfio_pci_dependent_device.from_buffer_copy(buf[12:20])
    assert (dep.group_id, dep.segment, dep.bus, dep.devfn) == (group, 0, bus, 0)
    assert buf[20:] == b"\xaa" * 8


# ---------------------------------------------------------------------------------------------
# Hot reset


def hot_reset(dev, *fds: int, flags: int = 0, count_: int | None = None,  # noqa: ANN001
              argsz: int | None = None, buflen: int | None = None) -> int:
    n = len(fds) if count_ is None else count_
    body = struct.pack(f"<{len(fds)}i", *fds)
    size = 12 + len(body)
    buf = bytearray(struct.pack("<III", size if argsz is None else argsz, flags, n) + body)
    if buflen is not None:
        buf = buf[:buflen]
    return dev.k.ioctl(dev.fd, V.VFIO_DEVICE_PCI_HOT_RESET, buf)


def test_hot_reset_checks_in_order(x86) -> None:
    dev = open_device(x86, EDU)
    other = open_device(x86, DMACOPY)
    expect_errno(errno.EINVAL, hot_reset, dev, dev.group, argsz=11)
    expect_errno(errno.EINVAL, hot_reset, dev, dev.group, flags=1)
    expect_errno(errno.EINVAL, hot_reset, dev)  # count 0: a group-opened device names groups
    expect_errno(errno.EINVAL, hot_reset, dev, 999, 998)  # more fds than affected devices
    expect_errno(errno.EFAULT, hot_reset, dev, dev.group, buflen=12)  # fds unreadable
    expect_errno(errno.EFAULT, hot_reset, dev, dev.group, argsz=12, buflen=12)
    expect_errno(errno.EBADF, hot_reset, dev, 999)
    expect_errno(errno.EINVAL, hot_reset, dev, dev.container)  # not a group
    expect_errno(errno.EINVAL, hot_reset, dev, dev.fd)  # a device fd is not a group either
    expect_errno(errno.EINVAL, hot_reset, dev, other.group)  # edu is not in group 2


def test_hot_reset_resets_the_device(x86, efds) -> None:
    dev = open_device(x86, EDU)
    fd = efds.new()
    set_trigger(dev, MSI, fd)
    enable_bus_master(dev)
    bar_write(dev, EDU_LIVENESS, 0x55)
    cfg_write(dev, R.PCI_INTERRUPT_LINE, 1, 3)
    # the kernel reads count fds whatever argsz says
    assert bar_read(dev, EDU_LIVENESS) == 0xFFFF_FFAA
    assert hot_reset(dev, dev.group, argsz=12) == 0
    assert bar_read(dev, EDU_LIVENESS) == 0
    assert cfg_read(dev, R.PCI_INTERRUPT_LINE, 1) == 3
    assert cfg_read(dev, R.PCI_COMMAND, 2) == 0x0006
    bar_write(dev, EDU_IRQ_RAISE, 1)
    assert count(fd) == 1


def test_close_resets_and_disables(x86) -> None:
    """close_device(): bus mastering off, device reset, the state of open restored."""
    dev = open_device(x86, EDU)
    enable_bus_master(dev)
    bar_write(dev, EDU_LIVENESS, 0x55)
    x86.close(dev.fd)
    hw = dev.hw
    assert not hw.bus_master
    assert hw.memory_enabled
    assert hw.cfg_read(R.PCI_COMMAND, 2) & R.PCI_COMMAND_INTX_DISABLE == 0
    assert hw.liveness == 0
    # reopening gives the open-time view again
    name = ctypes.create_string_buffer(EDU.encode())
    d2 = x86.ioctl(dev.group, V.VFIO_GROUP_GET_DEVICE_FD, name)
    assert int.from_bytes(x86.pread(d2, 2, V.VFIO_PCI_INDEX_TO_OFFSET(7) + 4), "little") == 2


def test_edu_dma_buffer_kept_across_reset(x86) -> None:
    dev = open_device(x86, EDU)
    dev.hw.dma_buf[0:4] = b"keep"
    reset(dev)
    assert bytes(dev.hw.dma_buf[0:4]) == b"keep"
