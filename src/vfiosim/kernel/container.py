"""The container: /dev/vfio/vfio.

Models drivers/vfio/container.c: ``vfio_fops_unl_ioctl`` (GET_API_VERSION, CHECK_EXTENSION,
SET_IOMMU, everything else passed to the backend, EINVAL while there is none),
``vfio_container_ioctl_check_extension``, ``vfio_ioctl_set_iommu``,
``vfio_container_attach_group`` / ``vfio_group_detach_container``.  SPEC §4.3, §4.6.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from vfiosim.kernel.uaccess import Process, UserArg, kerr
from vfiosim.kernel.vfio_main import File
from vfiosim.uapi import vfio as V

if TYPE_CHECKING:
    from vfiosim.kernel.group import Group
    from vfiosim.kernel.iommu import IommuBackend, IommuDriver
    from vfiosim.kernel.vfio_main import VfioCore


class Container:
    """``struct vfio_container``: groups and at most one IOMMU backend."""

    def __init__(self, core: VfioCore) -> None:
        self.core = core
        self.machine = core.machine
        self.groups: list[Group] = []
        self.driver: type[IommuDriver] | None = None
        self.backend: IommuBackend | None = None
        self.users = 1  # the container file; every attached group holds one more

    # -- ioctls -------------------------------------------------------------------------------
    def ioctl_check_extension(self, ext: int) -> int:
        """vfio_container_ioctl_check_extension(): no backend: ask every driver without
        container state, first positive answer wins; else ask the container's backend."""
        if self.backend is None:
            ret = 0
            for drv in self.machine.iommu_drivers:
                ret = drv.check_extension(self.machine, ext)
                if ret > 0:
                    break
            return ret
        return self.backend.check_extension(ext)

    def ioctl_set_iommu(self, iommu_type: int) -> int:
        """vfio_ioctl_set_iommu(): only a container with a group and no backend; try each
        driver that reports the type, undoing its attaches on error."""
        if not self.groups or self.backend is not None:
            raise kerr(errno.EINVAL)
        err: OSError = kerr(errno.ENODEV)
        for drv in self.machine.iommu_drivers:
            if drv.check_extension(self.machine, iommu_type) <= 0:
                continue
            try:
                backend = drv.open(self.machine, iommu_type)
            except OSError as e:
                err = e
                continue
            try:
                self._attach_groups(backend)
            except OSError as e:
                backend.release()
                err = e
                continue
            self.driver, self.backend = drv, backend
            return 0
        raise err

    def _attach_groups(self, backend: IommuBackend) -> None:
        """__vfio_container_attach_groups(): attach all, or detach the ones done."""
        done: list[Group] = []
        try:
            for g in self.groups:
                backend.attach_group(g)
                done.append(g)
        except OSError:
            for g in reversed(done):
                backend.detach_group(g)
            raise

    # -- groups ---------------------------------------------------------------------------------
    def attach_group(self, group: Group) -> None:
        """vfio_container_attach_group() after the viability check: the backend (if any)
        attaches the group; its error is returned."""
        if self.backend is not None:
            self.backend.attach_group(group)
        self.groups.append(group)
        self.users += 1

    def detach_group(self, group: Group) -> None:
        """vfio_group_detach_container(): the last group's detach releases the backend."""
        if self.backend is not None:
            self.backend.detach_group(group)
        self.groups.remove(group)
        if self.backend is not None and not self.groups:
            self.backend.release()
            self.driver = self.backend = None
        self.put()

    def put(self) -> None:
        self.users -= 1
        if self.users == 0 and self in self.core.containers:
            self.core.containers.remove(self)


class ContainerFile(File):
    """An open /dev/vfio/vfio (``vfio_fops``)."""

    kind = "container"

    def __init__(self, core: VfioCore) -> None:
        super().__init__()
        self.container = Container(core)
        core.containers.append(self.container)

    def ioctl(self, proc: Process, request: int, arg: UserArg) -> int | File:
        """vfio_fops_unl_ioctl()."""
        c = self.container
        if request == V.VFIO_GET_API_VERSION:
            return V.VFIO_API_VERSION
        if request == V.VFIO_CHECK_EXTENSION:
            return c.ioctl_check_extension(arg.value)
        if request == V.VFIO_SET_IOMMU:
            return c.ioctl_set_iommu(arg.value)
        if c.backend is None:
            raise kerr(errno.EINVAL)  # ret = -EINVAL until a driver is set
        return c.backend.ioctl(proc, request, arg)

    # read/write: vfio_fops_read/write pass to the driver's read/write, which Type1 and PAMU
    # lack: EINVAL (the File defaults).

    def mmap(self, proc: Process, offset: int, length: int, prot: int, flags: int) -> Any:
        # SPEC §2.7 #7: before 5.15 vfio_fops_mmap answered EINVAL; since, there is no mmap op.
        if self.container.machine.profile.before("5.15"):
            raise kerr(errno.EINVAL)
        raise kerr(errno.ENODEV)

    def release(self) -> None:
        """vfio_fops_release(): the container lives on while groups reference it."""
        self.container.put()

    def describe(self) -> str:
        return f"container#{self.id}"
