"""VFIO_DEVICE_GET_REGION_INFO and mmap of the device fd (SPEC §11.3, §13.6)."""

from __future__ import annotations

import ctypes
import errno
import mmap
import struct

import pytest
from device_helpers import DMACOPY, EDU, PAGE, expect_errno, open_device, region_info

from vfiosim.kernel.pci.core import MmapRegion
from vfiosim.uapi import vfio as V

READ_WRITE = V.VFIO_REGION_INFO_FLAG_READ | V.VFIO_REGION_INFO_FLAG_WRITE


def test_edu_regions(x86) -> None:
    dev = open_device(x86, EDU)
    bar0 = region_info(dev, 0)
    assert (bar0.size, bar0.offset, bar0.flags) == (0x10_0000, 0, READ_WRITE)
    assert bar0.cap_offset == 0
    for i in range(1, 6):
        r = region_info(dev, i)
        assert (r.size, r.offset, r.flags) == (0, i << 40, 0)
    rom = region_info(dev, V.VFIO_PCI_ROM_REGION_INDEX)
    assert (rom.size, rom.offset, rom.flags) == (0, 6 << 40, 0)
    conf = region_info(dev, V.VFIO_PCI_CONFIG_REGION_INDEX)
    assert (conf.size, conf.offset, conf.flags) == (256, 0x700_0000_0000, READ_WRITE)


def test_dmacopy_config_region_is_pcie_sized(x86) -> None:
    dev = open_device(x86, DMACOPY)
    conf = region_info(dev, V.VFIO_PCI_CONFIG_REGION_INDEX)
    assert (conf.size, conf.flags) == (4096, READ_WRITE)
    hw = dev.hw
    for i in range(6):
        r = region_info(dev, i)
        assert r.offset == i << 40
        assert r.size == dev.vdev.bar_len(i)
        assert r.flags == (READ_WRITE if r.size else 0)
    assert region_info(dev, hw.msix_bar).size > 0


@pytest.mark.parametrize("index", [V.VFIO_PCI_VGA_REGION_INDEX, 9, 10, 0xFFFF_FFFF])
def test_vga_and_beyond_einval(x86, index: int) -> None:
    dev = open_device(x86)
    expect_errno(errno.EINVAL, region_info, dev, index)


def test_argsz(x86) -> None:
    dev = open_device(x86)
    expect_errno(errno.EINVAL, region_info, dev, 0, 31)
    assert region_info(dev, 0, 32).size == 0x10_0000


def test_short_buffer_efault(x86) -> None:
    dev = open_device(x86)
    buf = bytearray(struct.pack("<IIII", 32, 0, 0, 0))  # 16 bytes only
    expect_errno(errno.EFAULT, x86.ioctl, dev.fd, V.VFIO_DEVICE_GET_REGION_INFO, buf)


def test_bar_mmap_option_sets_mmap_flag(make_kernel) -> None:
    k = make_kernel("x86", bar_mmap=True)
    dev = open_device(k, EDU)
    assert region_info(dev, 0).flags == READ_WRITE | V.VFIO_REGION_INFO_FLAG_MMAP == 7
    assert region_info(dev, 1).flags == 0
    assert region_info(dev, V.VFIO_PCI_CONFIG_REGION_INDEX).flags == READ_WRITE


def test_msix_bar_with_mmap_has_msix_mappable_cap(make_kernel) -> None:
    k = make_kernel("x86", bar_mmap=True)
    dev = open_device(k, DMACOPY)
    bar = dev.hw.msix_bar
    small = region_info(dev, bar)
    flags = READ_WRITE | V.VFIO_REGION_INFO_FLAG_MMAP | V.VFIO_REGION_INFO_FLAG_CAPS
    assert small.flags == flags
    assert small.argsz == 32 + 8  # raised: the chain did not fit
    assert small.cap_offset == 0
    buf = bytearray(48)
    buf[0:12] = struct.pack("<III", 40, 0, bar)
    buf[40:48] = b"\xaa" * 8
    k.ioctl(dev.fd, V.VFIO_DEVICE_GET_REGION_INFO, buf)
    info = V.vfio_region_info.from_buffer_copy(buf[:32])
    assert info.flags == flags and info.cap_offset == 32 and info.argsz == 40
    assert struct.unpack_from("<HHI", buf, 32) == (V.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, 0)
    assert buf[40:48] == b"\xaa" * 8


def test_mmap_without_flag_einval(x86) -> None:
    dev = open_device(x86)
    expect_errno(errno.EINVAL, x86.mmap, dev.fd, PAGE, 0, 3, mmap.MAP_SHARED)


def test_mmap_with_bar_mmap(make_kernel) -> None:
    k = make_kernel("x86", bar_mmap=True)
    dev = open_device(k)
    assert k.mmap(dev.fd, PAGE, 0, 3, mmap.MAP_SHARED) == MmapRegion(0, 0, PAGE)
    assert k.mmap(dev.fd, 0x10_0000, 0, 3, mmap.MAP_SHARED) == MmapRegion(0, 0, 0x10_0000)
    assert k.mmap(dev.fd, PAGE, 0xF_F000, 3, mmap.MAP_SHARED) == MmapRegion(0, 0xF_F000, PAGE)
    # past the BAR, private, other regions, unaligned offset
    expect_errno(errno.EINVAL, k.mmap, dev.fd, 2 * PAGE, 0xF_F000, 3, mmap.MAP_SHARED)
    expect_errno(errno.EINVAL, k.mmap, dev.fd, PAGE, 0, 3, mmap.MAP_PRIVATE)
    expect_errno(errno.EINVAL, k.mmap, dev.fd, PAGE, 1 << 40, 3, mmap.MAP_SHARED)
    expect_errno(errno.EINVAL, k.mmap, dev.fd, PAGE, 7 << 40, 3, mmap.MAP_SHARED)
    expect_errno(errno.EINVAL, k.mmap, dev.fd, PAGE, 9 << 40, 3, mmap.MAP_SHARED)
    expect_errno(errno.EINVAL, k.mmap, dev.fd, PAGE, 0x10, 3, mmap.MAP_SHARED)


def test_region_info_reads_only_minsz(x86) -> None:
    """cap_offset is part of minsz: without capabilities the kernel copies back what the
    user passed (vfio_pci_ioctl_get_region_info never clears it)."""
    dev = open_device(x86)
    info = V.vfio_region_info(argsz=32, index=0, cap_offset=0x1234)
    x86.ioctl(dev.fd, V.VFIO_DEVICE_GET_REGION_INFO, info)
    assert info.cap_offset == 0x1234
    assert ctypes.sizeof(info) == 32
