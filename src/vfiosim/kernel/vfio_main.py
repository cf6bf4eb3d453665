"""The VFIO core: model files, the /dev/vfio namespace, and the device file.

Models drivers/vfio/vfio_main.c (device file, ``vfio_device_fops``) and the open paths of
container.c (``vfio_fops_open``) and group.c (``vfio_group_fops_open``).  SPEC §4.

A :class:`File` is one open file description (``struct file``).  Front ends (the in-process
:class:`vfiosim.api.Kernel` and the supervisor) map fd numbers to Files and call
:meth:`File.release` when the last reference goes, as ``fput`` does.  Files that hold other
files (a device file holds its group file, SPEC §4.6) take references with :meth:`File.get`.
"""

from __future__ import annotations

import errno
import itertools
from typing import TYPE_CHECKING, Any

from vfiosim.kernel.uaccess import Process, UserArg, kerr
from vfiosim.uapi import vfio as V

if TYPE_CHECKING:
    from vfiosim.kernel.container import Container
    from vfiosim.kernel.group import Group
    from vfiosim.machine import Machine

VFIO_DIR = "/dev/vfio/"
CONTAINER_PATH = "/dev/vfio/vfio"

_ids = itertools.count(1)


class File:
    """One open file description of a VFIO character device."""

    kind = "?"

    def __init__(self) -> None:
        self.refs = 1
        self.id = next(_ids)  # stable name for traces and dumps
        self.released = False

    def get(self) -> File:
        """get_file(): one more reference (a device file holding its group file)."""
        self.refs += 1
        return self

    def put(self) -> None:
        """fput(): drop a reference; the last one calls :meth:`release`."""
        self.refs -= 1
        if self.refs == 0 and not self.released:
            self.released = True
            self.release()

    # The file operations.  Defaults are the answers of a file without that operation.
    def ioctl(self, proc: Process, request: int, arg: UserArg) -> int | File:
        raise kerr(errno.ENOTTY)

    def read(self, proc: Process, count: int, offset: int) -> bytes:
        raise kerr(errno.EINVAL)

    def write(self, proc: Process, data: bytes, offset: int) -> int:
        raise kerr(errno.EINVAL)

    def mmap(self, proc: Process, offset: int, length: int, prot: int, flags: int) -> Any:
        # No mmap file operation: do_mmap() answers ENODEV.
        raise kerr(errno.ENODEV)

    def release(self) -> None:
        pass

    def describe(self) -> str:
        return f"{self.kind}#{self.id}"


class DeviceFile(File):
    """A device fd from VFIO_GROUP_GET_DEVICE_FD (``vfio_device_fops``).

    Forwards ioctl/read/write/mmap to the device's VFIO driver (vfio-pci, SPEC §11) and holds a
    reference to its group file, so the group stays attached while it is open (SPEC §4.5)."""

    kind = "device"

    def __init__(self, group: Group, record: Any, driver: Any, group_file: File) -> None:
        super().__init__()
        self.group = group
        self.record = record
        self.driver = driver
        self.group_file = group_file.get()

    def ioctl(self, proc: Process, request: int, arg: UserArg) -> int | File:
        return self.driver.ioctl(proc, request, arg)

    def read(self, proc: Process, count: int, offset: int) -> bytes:
        return self.driver.read(proc, count, offset)

    def write(self, proc: Process, data: bytes, offset: int) -> int:
        return self.driver.write(proc, data, offset)

    def mmap(self, proc: Process, offset: int, length: int, prot: int, flags: int) -> Any:
        return self.driver.mmap(proc, offset, length, prot, flags)

    def release(self) -> None:
        """vfio_device_fops_release(): close the device, then give up the container use
        (vfio_group_unuse_container) and the group file reference."""
        self.group.device_closed(self)
        self.group_file.put()

    def describe(self) -> str:
        return f"device {self.record.name}"


def vfio_set_irqs_validate_and_prepare(hdr: V.vfio_irq_set, num_irqs: int,
                                       max_irq_type: int) -> int:
    """``vfio_set_irqs_validate_and_prepare()`` (drivers/vfio/vfio_main.c).

    Returns the size of ``data[]`` to copy in.  Checks, in the kernel's order: argsz, index,
    count wrap, unknown flags (one EINVAL test); the range against ``num_irqs``; exactly one
    data type; ``argsz`` holds the data.
    """
    minsz = V.offsetofend(V.vfio_irq_set, "count")
    if (hdr.argsz < minsz or hdr.index >= max_irq_type
            or hdr.count >= 0xFFFF_FFFF - hdr.start
            or hdr.flags & ~(V.VFIO_IRQ_SET_DATA_TYPE_MASK | V.VFIO_IRQ_SET_ACTION_TYPE_MASK)):
        raise kerr(errno.EINVAL)
    if hdr.start >= num_irqs or hdr.start + hdr.count > num_irqs:
        raise kerr(errno.EINVAL)
    dtype = hdr.flags & V.VFIO_IRQ_SET_DATA_TYPE_MASK
    if dtype == V.VFIO_IRQ_SET_DATA_NONE:
        size = 0
    elif dtype == V.VFIO_IRQ_SET_DATA_BOOL:
        size = 1
    elif dtype == V.VFIO_IRQ_SET_DATA_EVENTFD:
        size = 4
    else:
        raise kerr(errno.EINVAL)
    if size:
        if hdr.argsz - minsz < hdr.count * size:
            raise kerr(errno.EINVAL)
        return hdr.count * size
    return 0


class VfioCore:
    """All VFIO state of one machine: groups, containers, device drivers."""

    def __init__(self, machine: Machine) -> None:
        from vfiosim.kernel.group import Group

        self.machine = machine
        self.groups: dict[int, Group] = {
            n: Group(self, n, recs) for n, recs in sorted(machine.groups.items())
        }
        self.containers: list[Container] = []
        self._drivers: dict[str, Any] = {}

    def device_driver(self, record: Any, group: Group) -> Any:
        """The vfio-pci driver object of a device (one per device, for the machine's life)."""
        drv = self._drivers.get(record.name)
        if drv is None:
            from vfiosim.kernel.pci.core import VfioPciDevice

            drv = self._drivers[record.name] = VfioPciDevice(self.machine, record, group)
        return drv

    def open(self, proc: Process, path: str, flags: int) -> File:
        """open(2) of a path under /dev/vfio/.  SPEC §4.2."""
        from vfiosim.kernel.container import ContainerFile

        if path == CONTAINER_PATH:
            return ContainerFile(self)
        if path.startswith(VFIO_DIR):
            name = path[len(VFIO_DIR):]
            if name.isdigit() and (name == "0" or not name.startswith("0")):
                group = self.groups.get(int(name))
                if group is not None:
                    return group.open_file()
        raise kerr(errno.ENOENT)

    def paths(self) -> list[str]:
        """Everything /dev/vfio/ lists."""
        return [CONTAINER_PATH] + [f"{VFIO_DIR}{n}" for n in self.groups]
