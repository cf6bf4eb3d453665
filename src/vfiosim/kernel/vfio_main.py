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

from vfiosim.kernel.uaccess import Process, UserArg, kerr, read_struct
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
        """``vfio_device_fops_unl_ioctl()``: the device is resumed for the call
        (``vfio_device_pm_runtime_get``); VFIO_DEVICE_FEATURE is served by the core, every
        other request by the driver's ioctl."""
        drv = self.driver
        drv.pm_runtime_get()
        try:
            if request == V.VFIO_DEVICE_FEATURE:
                return vfio_ioctl_device_feature(drv, proc, arg)
            return drv.ioctl(proc, request, arg)
        finally:
            drv.pm_runtime_put()

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


def vfio_check_feature(flags: int, argsz: int, supported_ops: int, minsz: int) -> int:
    """``vfio_check_feature()`` (drivers/vfio/vfio_main.c): 0 for a PROBE that passed, 1 when
    the caller should go on; EINVAL for an unsupported GET/SET, neither without PROBE, or
    ``argsz`` (of ``data[]``) below ``minsz``."""
    if flags & (V.VFIO_DEVICE_FEATURE_GET | V.VFIO_DEVICE_FEATURE_SET) & ~supported_ops:
        raise kerr(errno.EINVAL)
    if flags & V.VFIO_DEVICE_FEATURE_PROBE:
        return 0
    # Without PROBE one of GET or SET must be requested
    if not flags & (V.VFIO_DEVICE_FEATURE_GET | V.VFIO_DEVICE_FEATURE_SET):
        raise kerr(errno.EINVAL)
    if argsz < minsz:
        raise kerr(errno.EINVAL)
    return 1


#: Features vfio_ioctl_device_feature() serves itself; each answers ENOTTY when the device
#: has no ``mig_ops`` (migration) or ``log_ops`` (DMA logging), as no modelled device has.
_CORE_FEATURES = frozenset((
    V.VFIO_DEVICE_FEATURE_MIGRATION, V.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
    V.VFIO_DEVICE_FEATURE_DMA_LOGGING_START, V.VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
    V.VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, V.VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
))


def vfio_ioctl_device_feature(driver: Any, proc: Process, arg: UserArg) -> int:
    """``vfio_ioctl_device_feature()`` (drivers/vfio/vfio_main.c), Linux 6.18.

    ``argsz`` below 8 or unknown flag bits → EINVAL; GET together with SET only with PROBE;
    then the feature: the core's migration and DMA-logging features (ENOTTY without the ops),
    else the driver's ``device_feature`` with ``data[]`` at offset 8 and ``argsz - 8`` bytes
    (ENOTTY when the driver has none).  SPEC Appendix A #1 proposed ENOTTY for every call;
    the kernel's checks come first, so the model follows the kernel.
    """
    minsz = V.offsetofend(V.vfio_device_feature, "flags")
    feature = read_struct(arg, V.vfio_device_feature, minsz)
    if feature.argsz < minsz:
        raise kerr(errno.EINVAL)
    # Check unknown flags
    if feature.flags & ~(V.VFIO_DEVICE_FEATURE_MASK | V.VFIO_DEVICE_FEATURE_SET
                         | V.VFIO_DEVICE_FEATURE_GET | V.VFIO_DEVICE_FEATURE_PROBE):
        raise kerr(errno.EINVAL)
    # GET & SET are mutually exclusive except with PROBE
    if (not feature.flags & V.VFIO_DEVICE_FEATURE_PROBE
            and feature.flags & V.VFIO_DEVICE_FEATURE_SET
            and feature.flags & V.VFIO_DEVICE_FEATURE_GET):
        raise kerr(errno.EINVAL)
    if (feature.flags & V.VFIO_DEVICE_FEATURE_MASK) in _CORE_FEATURES:
        raise kerr(errno.ENOTTY)  # !device->mig_ops / !device->log_ops
    device_feature = getattr(driver, "device_feature", None)
    if device_feature is None:
        raise kerr(errno.ENOTTY)
    return int(device_feature(proc, feature.flags, arg, minsz, feature.argsz - minsz))


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
