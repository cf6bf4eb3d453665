"""Small helpers for core tests: the calls every VFIO client starts with."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable

import pytest

from vfiosim import Kernel
from vfiosim.uapi import vfio as V


def expect_errno(code: int, fn: Callable[..., object], *args: object, **kw: object) -> None:
    """Call fn(*args, **kw) and check it fails with OSError(code) (the errno, not the class:
    OSError(ENOENT) comes out as FileNotFoundError)."""
    with pytest.raises(OSError) as e:
        fn(*args, **kw)
    assert e.value.errno == code, (
        f"expected {errno.errorcode[code]}, got {errno.errorcode.get(e.value.errno)}")


def set_container(k: Kernel, group_fd: int, container_fd: int) -> int:
    return k.ioctl(group_fd, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(container_fd))


def group_status(k: Kernel, group_fd: int) -> int:
    st = V.vfio_group_status(argsz=ctypes.sizeof(V.vfio_group_status))
    k.ioctl(group_fd, V.VFIO_GROUP_GET_STATUS, st)
    return st.flags


def attach(k: Kernel, group: int | None = None, iommu: int | None = V.VFIO_TYPE1v2_IOMMU
           ) -> tuple[int, int]:
    """Open a container and group N, attach, and (unless iommu is None) SET_IOMMU."""
    group = k.groups()[0] if group is None else group
    c = k.open("/dev/vfio/vfio", os.O_RDWR)
    g = k.open(f"/dev/vfio/{group}", os.O_RDWR)
    set_container(k, g, c)
    if iommu is not None:
        k.ioctl(c, V.VFIO_SET_IOMMU, iommu)
    return c, g


def device_name(k: Kernel, group: int) -> str:
    return next(d.name for d in k.devices() if d.group == group)


def get_device_fd(k: Kernel, group_fd: int, name: str) -> int:
    return k.ioctl(group_fd, V.VFIO_GROUP_GET_DEVICE_FD, ctypes.create_string_buffer(name.encode()))
