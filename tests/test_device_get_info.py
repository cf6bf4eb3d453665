"""VFIO_DEVICE_GET_INFO, VFIO_DEVICE_FEATURE and the device fd's unknown ioctls (SPEC §11.4,
§3.2, §2.7 #13)."""

from __future__ import annotations

import errno
import os
import struct

import pytest
from device_helpers import DMACOPY, EDU, EventFds, count, expect_errno, open_device

from vfiosim.uapi import vfio as V

POISON = 0xAA


def get_info(dev, argsz: int, buflen: int = 32) -> bytearray:  # noqa: ANN001
    buf = bytearray([POISON]) * buflen
    buf[0:4] = argsz.to_bytes(4, "little")
    dev.k.ioctl(dev.fd, V.VFIO_DEVICE_GET_INFO, buf)
    return buf


@pytest.mark.parametrize("name", [EDU, DMACOPY])
def test_get_info_values(x86, name: str) -> None:
    dev = open_device(x86, name)
    info = V.vfio_device_info(argsz=V.sizeof(V.vfio_device_info))
    assert x86.ioctl(dev.fd, V.VFIO_DEVICE_GET_INFO, info) == 0
    assert info.flags == V.VFIO_DEVICE_FLAGS_PCI | V.VFIO_DEVICE_FLAGS_RESET == 3
    assert info.num_regions == 9
    assert info.num_irqs == 5
    assert info.cap_offset == 0
    assert info.pad == 0
    assert info.argsz == 24


def test_argsz_below_minsz(x86) -> None:
    dev = open_device(x86)
    buf = get_info(dev, 16)  # works
    assert buf[4] == 3
    expect_errno(errno.EINVAL, get_info, dev, 15)
    expect_errno(errno.EINVAL, get_info, dev, 0)


def test_short_buffer_efault(x86) -> None:
    dev = open_device(x86)
    expect_errno(errno.EFAULT, get_info, dev, 16, 15)


@pytest.mark.parametrize("argsz,written", [(16, 16), (19, 19), (20, 20), (23, 23), (24, 24),
                                           (32, 24), (100, 24)])
def test_written_back_6_18(x86, argsz: int, written: int) -> None:
    """6.6 and later: min(argsz, 24) bytes of a zeroed struct; nothing past them."""
    dev = open_device(x86)
    buf = get_info(dev, argsz)
    expect = (argsz.to_bytes(4, "little") + (3).to_bytes(4, "little") + (9).to_bytes(4, "little")
              + (5).to_bytes(4, "little") + bytes(8))
    assert bytes(buf[:written]) == expect[:written]
    assert set(buf[written:]) == {POISON}


@pytest.mark.parametrize("argsz,written", [(16, 16), (19, 16), (20, 20), (24, 20), (64, 20)])
def test_written_back_before_6_6(make_kernel, argsz: int, written: int) -> None:
    """§2.7 #13: 16 bytes if argsz < 20, else 20; the tail pad is never written."""
    k = make_kernel("x86", kernel="6.1")
    dev = open_device(k)
    buf = get_info(dev, argsz)
    assert int.from_bytes(buf[4:8], "little") == 3
    assert int.from_bytes(buf[12:16], "little") == 5
    assert set(buf[written:]) == {POISON}
    if written == 20:
        assert buf[16:20] == bytes(4)


def test_trailing_bytes_ignored(x86) -> None:
    """§3.7 rule 2: bytes past minsz are not read (same answer whatever they hold)."""
    dev = open_device(x86)
    a = get_info(dev, 24)
    b = bytearray(32)
    b[0:4] = (24).to_bytes(4, "little")
    b[4:24] = b"\xff" * 20
    x86.ioctl(dev.fd, V.VFIO_DEVICE_GET_INFO, b)
    assert bytes(a[:24]) == bytes(b[:24])


@pytest.mark.parametrize("req", [
    V.VFIO_DEVICE_QUERY_GFX_PLANE, V.VFIO_DEVICE_GET_GFX_DMABUF, V.VFIO_DEVICE_IOEVENTFD,
    V.VFIO_GET_API_VERSION, V.VFIO_IOMMU_UNMAP_DMA + 100, 0x1234])
def test_unknown_ioctls_enotty(x86, req: int) -> None:
    dev = open_device(x86)
    expect_errno(errno.ENOTTY, x86.ioctl, dev.fd, req, bytearray(64))


# ---------------------------------------------------------------------------------------------
# VFIO_DEVICE_FEATURE: vfio_ioctl_device_feature() (drivers/vfio/vfio_main.c) and
# vfio_pci_core_ioctl_feature() (vfio_pci_core.c).  SPEC Appendix A #1 proposed ENOTTY for the
# whole ioctl; the kernel checks argsz and flags first (EINVAL) and answers ENOTTY only for a
# feature nobody serves, so the model follows the kernel.

GET, SET, PROBE = V.VFIO_DEVICE_FEATURE_GET, V.VFIO_DEVICE_FEATURE_SET, V.VFIO_DEVICE_FEATURE_PROBE


def feature(dev, flags: int, data: bytes = b"", argsz: int | None = None) -> int:  # noqa: ANN001
    if argsz is None:
        argsz = 8 + len(data)
    return dev.k.ioctl(dev.fd, V.VFIO_DEVICE_FEATURE,
                       bytearray(struct.pack("<II", argsz, flags) + data))


def test_feature_argsz_and_flags_einval(x86) -> None:
    dev = open_device(x86)
    expect_errno(errno.EINVAL, x86.ioctl, dev.fd, V.VFIO_DEVICE_FEATURE, bytearray(64))
    expect_errno(errno.EINVAL, feature, dev, V.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY | SET,
                 argsz=7)
    # unknown flag bits, checked before the feature index
    expect_errno(errno.EINVAL, feature, dev, 0x1234 | PROBE | (1 << 19))
    # GET and SET together only with PROBE
    expect_errno(errno.EINVAL, feature, dev, 0x1234 | GET | SET)


@pytest.mark.parametrize("index", [
    0x1234, V.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN, V.VFIO_DEVICE_FEATURE_MIGRATION,
    V.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, V.VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
    V.VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, V.VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
    V.VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, V.VFIO_DEVICE_FEATURE_BUS_MASTER])
def test_feature_not_served_enotty(x86, index: int) -> None:
    dev = open_device(x86)
    expect_errno(errno.ENOTTY, feature, dev, index | PROBE | GET | SET)
    expect_errno(errno.ENOTTY, feature, dev, index | SET, bytes(64))


def test_feature_low_power_entry_and_exit(x86) -> None:
    dev = open_device(x86)
    entry, exit_ = V.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY, V.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT
    assert feature(dev, entry | PROBE | SET) == 0
    assert feature(dev, entry | PROBE) == 0
    expect_errno(errno.EINVAL, feature, dev, entry | PROBE | GET)  # only SET is supported
    expect_errno(errno.EINVAL, feature, dev, entry)  # neither GET nor SET
    assert feature(dev, entry | SET) == 0
    expect_errno(errno.EINVAL, feature, dev, entry | SET)  # already engaged
    assert feature(dev, exit_ | SET) == 0
    assert feature(dev, exit_ | SET) == 0  # exit when not engaged is fine
    assert feature(dev, entry | SET) == 0


def test_feature_low_power_entry_with_wakeup(x86) -> None:
    dev = open_device(x86)
    wake = V.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP
    efds = EventFds()
    try:
        fd = efds.new()
        expect_errno(errno.EINVAL, feature, dev, wake | SET, struct.pack("<iI", fd, 0)[:4])
        expect_errno(errno.EINVAL, feature, dev, wake | SET, struct.pack("<iI", -1, 0))
        expect_errno(errno.EBADF, feature, dev, wake | SET, struct.pack("<iI", 999, 0))
        r, w = os.pipe()
        efds.fds += [r, w]
        expect_errno(errno.EINVAL, feature, dev, wake | SET, struct.pack("<iI", r, 0))
        assert feature(dev, wake | SET, struct.pack("<iI", fd, 0)) == 0
        assert count(fd) == 0
        # The device suspended when the ioctl returned; the next call resumes it, which
        # signals the eventfd and ends the low power state (vfio_pci_core_runtime_resume).
        get_info(dev, 24)
        assert count(fd) == 1
        get_info(dev, 24)
        assert count(fd) == 0
        assert feature(dev, wake | SET, struct.pack("<iI", fd, 0)) == 0
        x86.pread(dev.fd, 4, V.VFIO_PCI_INDEX_TO_OFFSET(V.VFIO_PCI_CONFIG_REGION_INDEX))
        assert count(fd) == 1
    finally:
        efds.close()
