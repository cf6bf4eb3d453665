"""The group: /dev/vfio/<N>.

Models drivers/vfio/group.c (``vfio_group_fops_open``, ``vfio_group_fops_unl_ioctl`` and its
handlers ``vfio_group_ioctl_get_status``, ``_set_container``, ``_unset_container``,
``_get_device_fd``, ``vfio_group_fops_release``) and the container-use accounting of
container.c (``vfio_group_use_container`` / ``vfio_group_unuse_container``).  SPEC §4.1, §4.4,
§4.6, with the older orders and errnos of §2.7 rows 1–5.

State per group: the one open group file (a second open is EBUSY), the container (None or
one), and ``container_users`` = 1 for the group file while attached + 1 per open device file.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from vfiosim.kernel.sanitizer import check_argsz
from vfiosim.kernel.uaccess import Process, UserArg, kerr, read_struct, write_struct
from vfiosim.kernel.vfio_main import DeviceFile, File
from vfiosim.uapi import vfio as V

if TYPE_CHECKING:
    from vfiosim.kernel.container import Container
    from vfiosim.kernel.vfio_main import VfioCore
    from vfiosim.machine import DeviceRecord

PAGE_SIZE = 4096
# Drivers that do not hold DMA ownership of a device: VFIO drivers, pci-stub, or none.
_NON_OWNING_DRIVERS = ("vfio-pci", "pci-stub", "none", "")


class Group:
    """``struct vfio_group`` of one IOMMU group."""

    def __init__(self, core: VfioCore, number: int, devices: list[DeviceRecord]) -> None:
        self.core = core
        self.machine = core.machine
        self.number = number
        self.devices = devices
        self.opened_file: GroupFile | None = None
        self.container: Container | None = None
        self.container_users = 0
        self.device_files: list[DeviceFile] = []

    @property
    def profile(self) -> Any:
        return self.machine.profile

    def viable(self) -> bool:
        """No host driver holds the DMA ownership of a device of the group (SPEC §4.1)."""
        return all(d.driver in _NON_OWNING_DRIVERS for d in self.devices)

    def open_file(self) -> GroupFile:
        """vfio_group_fops_open(): one open file per group; device files hold it (EBUSY)."""
        if self.opened_file is not None:
            raise kerr(errno.EBUSY)
        self.opened_file = GroupFile(self)
        return self.opened_file

    # -- ioctls ---------------------------------------------------------------------------------
    def ioctl_get_status(self, arg: UserArg) -> int:
        """vfio_group_ioctl_get_status()."""
        minsz = V.offsetofend(V.vfio_group_status, "flags")
        status = read_struct(arg, V.vfio_group_status, minsz)
        if status.argsz < minsz:
            raise kerr(errno.EINVAL)
        check_argsz(self.core.machine, "VFIO_GROUP_GET_STATUS", "vfio_group_status",
                    status.argsz, (V.sizeof(V.vfio_group_status),))
        status.flags = 0
        if self.profile.before("5.19"):
            # SPEC §2.7 #4: viability is reported from the drivers, attached or not.
            if self.viable():
                status.flags |= V.VFIO_GROUP_FLAGS_VIABLE
            if self.container is not None:
                status.flags |= V.VFIO_GROUP_FLAGS_CONTAINER_SET
        elif self.container is not None:
            status.flags |= V.VFIO_GROUP_FLAGS_CONTAINER_SET | V.VFIO_GROUP_FLAGS_VIABLE
        elif self.viable():
            status.flags |= V.VFIO_GROUP_FLAGS_VIABLE
        write_struct(arg, status, minsz)
        return 0

    def ioctl_set_container(self, proc: Process, arg: UserArg) -> int:
        """vfio_group_ioctl_set_container() and vfio_container_attach_group()."""
        from vfiosim.kernel.container import ContainerFile

        fd = int.from_bytes(arg.read(0, 4), "little", signed=True)
        old = self.profile.before("6.1")
        if old:
            # SPEC §2.7 #1, #2: before 6.1 a negative fd is EINVAL, checked first, and the
            # attached check comes before the fd lookup.
            if fd < 0:
                raise kerr(errno.EINVAL)
            if self.container is not None:
                raise kerr(errno.EINVAL)
            f = proc.fget(fd)
        else:
            f = proc.fget(fd)  # EBADF: not an open fd (-1 included)
            if self.container is not None:
                raise kerr(errno.EINVAL)
        if not isinstance(f, ContainerFile):
            # SPEC §2.7 #3: EINVAL before 6.2; since, an fd that is neither a container nor an
            # iommufd is EBADFD (iommufd is not modelled, Appendix B).
            raise kerr(errno.EINVAL if self.profile.before("6.2") else errno.EBADFD)
        if not self.profile.before("5.19") and not self.viable():
            raise kerr(errno.EPERM)  # iommu_group_claim_dma_owner(): a host driver owns it
        container = f.container
        container.attach_group(self)
        self.container = container
        self.container_users = 1
        return 0

    def ioctl_unset_container(self) -> int:
        """vfio_group_ioctl_unset_container()."""
        if self.container is None:
            raise kerr(errno.EINVAL)
        if self.container_users != 1:
            raise kerr(errno.EBUSY)
        self.detach_container()
        return 0

    def detach_container(self) -> None:
        """vfio_group_detach_container()."""
        container = self.container
        assert container is not None
        self.container = None
        self.container_users = 0
        container.detach_group(self)

    def ioctl_get_device_fd(self, proc: Process, arg: UserArg) -> File:
        """vfio_group_ioctl_get_device_fd(): name lookup (ENODEV), then the container checks
        of vfio_device_open_file()/vfio_group_use_container() (EINVAL).  Before 6.0 the
        container checks came first (SPEC §2.7 #5)."""
        name = _strndup_user(arg, PAGE_SIZE)
        if self.profile.before("6.0"):
            self._check_use_container()
            record = self._device_from_name(name)
        else:
            record = self._device_from_name(name)
            self._check_use_container()
        driver = self.core.device_driver(record, self)
        assert self.opened_file is not None
        df = DeviceFile(self, record, driver, self.opened_file)
        self.container_users += 1
        try:
            if not any(o.record is record for o in self.device_files):
                driver.open_device()
        except OSError:
            self.container_users -= 1
            df.group_file.put()
            raise
        self.device_files.append(df)
        return df

    def _device_from_name(self, name: str) -> DeviceRecord:
        """vfio_device_get_from_name() with vfio_pci_core_match(): the PCI name, then only
        spaces, or options.  The only option is " vf_token=<uuid>", which a device that is
        neither PF nor VF refuses ("VF token incorrectly provided"); a malformed or unknown
        option is refused too.  Every refusal is EINVAL and ends the search."""
        for d in self.devices:
            if not d.is_vfio:
                continue  # bound to a host driver: no vfio_device is registered for it
            if name == d.name:
                return d
            if name.startswith(d.name + " "):
                if not name[len(d.name):].strip(" "):
                    return d
                raise kerr(errno.EINVAL)
        raise kerr(errno.ENODEV)

    def _check_use_container(self) -> None:
        if self.container is None:
            raise kerr(errno.EINVAL)
        if self.container.backend is None:
            raise kerr(errno.EINVAL)
        if self.profile.before("5.19") and not self.viable():
            raise kerr(errno.EINVAL)  # SPEC §2.7 #4: the old viability check at open

    def device_closed(self, df: DeviceFile) -> None:
        """vfio_df_group_close(): the last file of a device closes it; the container use
        it held is given back (vfio_group_unuse_container)."""
        self.device_files.remove(df)
        if not any(o.record is df.record for o in self.device_files):
            df.driver.close_device()
        self.container_users -= 1

    def file_released(self) -> None:
        """vfio_group_fops_release(): runs once no device file holds the group file."""
        if self.container is not None:
            self.detach_container()
        self.opened_file = None


class GroupFile(File):
    """An open /dev/vfio/<N> (``vfio_group_fops``)."""

    kind = "group"

    def __init__(self, group: Group) -> None:
        super().__init__()
        self.group = group

    def ioctl(self, proc: Process, request: int, arg: UserArg) -> int | File:
        """vfio_group_fops_unl_ioctl()."""
        g = self.group
        if request == V.VFIO_GROUP_GET_DEVICE_FD:
            return g.ioctl_get_device_fd(proc, arg)
        if request == V.VFIO_GROUP_GET_STATUS:
            return g.ioctl_get_status(arg)
        if request == V.VFIO_GROUP_SET_CONTAINER:
            return g.ioctl_set_container(proc, arg)
        if request == V.VFIO_GROUP_UNSET_CONTAINER:
            return g.ioctl_unset_container()
        raise kerr(errno.ENOTTY)

    def release(self) -> None:
        self.group.file_released()

    def describe(self) -> str:
        return f"group {self.group.number}"


def _strndup_user(arg: UserArg, limit: int) -> str:
    """strndup_user(): a NUL-terminated string of at most ``limit`` bytes; EFAULT when it
    cannot be read, EINVAL when no NUL comes within the limit."""
    out = bytearray()
    pos = 0
    while pos < limit:
        # Read up to the next 64-byte boundary so a string that ends just before an unmapped
        # page (or the end of a Python buffer) is still read.
        n = min(64 - ((arg.value + pos) % 64 if arg.value else pos % 64), limit - pos)
        try:
            chunk = arg.read(pos, n)
        except OSError:
            chunk = b""
            for i in range(n):
                chunk += arg.read(pos + i, 1)  # EFAULT at the first unreadable byte
                if chunk.endswith(b"\0"):
                    break
        nul = chunk.find(b"\0")
        if nul >= 0:
            out += chunk[:nul]
            return out.decode("utf-8", "surrogateescape")
        out += chunk
        pos += len(chunk)
    raise kerr(errno.EINVAL)

