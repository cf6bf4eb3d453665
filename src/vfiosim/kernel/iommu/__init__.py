"""IOMMU backends of the VFIO container: the ops table every backend implements.

Models ``struct vfio_iommu_driver_ops`` (drivers/vfio/vfio.h) and how container.c uses it:
``vfio_ioctl_check_extension`` asks every driver (no container state) until one answers yes,
``vfio_ioctl_set_iommu`` opens the driver whose CHECK_EXTENSION(type) is positive and attaches
every group, and the container passes every other ioctl to ``ops->ioctl``.  SPEC §4.3.

A machine lists the drivers it has (x86: Type1; p4080/t4240: PAMU); see
:mod:`vfiosim.machine`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from vfiosim.kernel.group import Group
    from vfiosim.kernel.uaccess import Process, UserArg
    from vfiosim.machine import Machine


class IommuDriver:
    """One registered VFIO IOMMU driver (``vfio_iommu_driver``)."""

    name: ClassVar[str] = "?"

    @classmethod
    def check_extension(cls, machine: Machine, ext: int) -> int:
        """CHECK_EXTENSION without a container (``ops->ioctl(NULL, ...)``)."""
        raise NotImplementedError

    @classmethod
    def open(cls, machine: Machine, iommu_type: int) -> IommuBackend:
        """``ops->open(arg)``: a new backend instance for a container; raises OSError."""
        raise NotImplementedError


class IommuBackend:
    """An opened backend: the ``iommu_data`` of one container."""

    driver: ClassVar[type[IommuDriver]]

    def check_extension(self, ext: int) -> int:
        """CHECK_EXTENSION with the container's state."""
        raise NotImplementedError

    def ioctl(self, proc: Process, request: int, arg: UserArg) -> int:
        """Every container ioctl other than the core's; unknown → ENOTTY."""
        raise NotImplementedError

    def attach_group(self, group: Group) -> None:
        """``ops->attach_group``; raises OSError (e.g. EINVAL)."""
        raise NotImplementedError

    def detach_group(self, group: Group) -> None:
        """``ops->detach_group``."""
        raise NotImplementedError

    def release(self) -> None:
        """``ops->release``: the last group left; every mapping goes."""
        raise NotImplementedError

    # -- used by vfio-pci for MSI (SPEC §9) ---------------------------------------------------
    def msi_address(self, group: Group, doorbell_phys: int) -> int:
        """The address a device of ``group`` must write to reach the MSI doorbell at physical
        address ``doorbell_phys``: the doorbell itself where MSI writes are not translated
        (x86), the IOVA of the bank's window on PAMU (§9.1 step 2).  ENODEV when the doorbell
        is not reachable (PAMU: no window maps that bank)."""
        raise NotImplementedError
