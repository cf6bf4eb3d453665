"""A VFIO client in Python using only os.open and fcntl.ioctl, for `vfiosim run`.

Usage: pyclient.py fake|x86.  Exit status 0 when every check passes."""

import errno
import fcntl
import os
import struct
import sys

VFIO_GET_API_VERSION = 0x3B64
VFIO_CHECK_EXTENSION = 0x3B65
VFIO_GROUP_GET_STATUS = 0x3B67
VFIO_GROUP_SET_CONTAINER = 0x3B68
VFIO_SET_IOMMU = 0x3B66
VFIO_GROUP_GET_DEVICE_FD = 0x3B6A


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "fake"
    c = os.open("/dev/vfio/vfio", os.O_RDWR)
    assert 900 <= c <= 999, c
    assert fcntl.ioctl(c, VFIO_GET_API_VERSION) == 0
    assert fcntl.ioctl(c, VFIO_CHECK_EXTENSION, 1) == 1
    assert os.listdir("/dev/vfio")
    link = os.readlink("/sys/bus/pci/devices/0000:01:00.0/iommu_group")
    group = int(link.rsplit("/", 1)[1])
    g = os.open(f"/dev/vfio/{group}", os.O_RDWR)
    try:
        os.open(f"/dev/vfio/{group}", os.O_RDWR)
        raise AssertionError("second open of a group must fail")
    except OSError as e:
        assert e.errno == errno.EBUSY
    if mode == "x86":
        st = bytearray(struct.pack("II", 8, 0))
        fcntl.ioctl(g, VFIO_GROUP_GET_STATUS, st, True)
        assert struct.unpack("II", st)[1] & 1  # VIABLE
        fcntl.ioctl(g, VFIO_GROUP_SET_CONTAINER, struct.pack("i", c))
        fcntl.ioctl(c, VFIO_SET_IOMMU, 3)
    d = fcntl.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, bytearray(b"0000:01:00.0\0"), True)
    assert 900 <= d <= 999, d
    with open("/sys/bus/pci/devices/0000:01:00.0/config", "rb") as f:
        assert f.read(4) == bytes([0x34, 0x12, 0xE8, 0x11])
    os.close(d)
    os.close(g)
    print("pyclient: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
