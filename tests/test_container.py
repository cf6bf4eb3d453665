"""Container ioctls: GET_API_VERSION, CHECK_EXTENSION, SET_IOMMU, dispatch.  SPEC §4.3, §13.2."""

from __future__ import annotations

import errno
import os

import pytest
from vfio_helpers import attach, expect_errno, set_container

from vfiosim.uapi import vfio as V
from vfiosim.uapi import vfio_pamu as P


def test_get_api_version_is_0(x86):
    c = x86.open("/dev/vfio/vfio")
    assert x86.ioctl(c, V.VFIO_GET_API_VERSION) == V.VFIO_API_VERSION == 0


@pytest.mark.parametrize("ext,answer", [
    (V.VFIO_TYPE1_IOMMU, 1), (V.VFIO_TYPE1v2_IOMMU, 1), (V.VFIO_UNMAP_ALL, 1),
    (V.VFIO_SPAPR_TCE_IOMMU, 0), (V.VFIO_DMA_CC_IOMMU, 0), (V.VFIO_TYPE1_NESTING_IOMMU, 0),
    (V.VFIO_UPDATE_VADDR, 0), (V.VFIO_NOIOMMU_IOMMU, 0), (V.VFIO_EEH, 0), (12345, 0),
])
def test_check_extension_before_set_iommu_x86(x86, ext, answer):
    c = x86.open("/dev/vfio/vfio")
    assert x86.ioctl(c, V.VFIO_CHECK_EXTENSION, ext) == answer


@pytest.mark.parametrize("ext,answer", [
    (P.VFIO_FSL_PAMU_IOMMU, 1), (V.VFIO_TYPE1_IOMMU, 0), (V.VFIO_TYPE1v2_IOMMU, 0),
    (V.VFIO_UNMAP_ALL, 0), (V.VFIO_DMA_CC_IOMMU, 0),
])
def test_check_extension_before_set_iommu_p4080(p4080, ext, answer):
    c = p4080.open("/dev/vfio/vfio")
    assert p4080.ioctl(c, V.VFIO_CHECK_EXTENSION, ext) == answer


def test_check_extension_dma_cc_after_set_iommu_x86(x86):
    c, _ = attach(x86)
    assert x86.ioctl(c, V.VFIO_CHECK_EXTENSION, V.VFIO_DMA_CC_IOMMU) == 1


def test_check_extension_nesting_on_profile_6_1(make_kernel):
    k = make_kernel("x86", kernel="6.1")
    c = k.open("/dev/vfio/vfio")
    assert k.ioctl(c, V.VFIO_CHECK_EXTENSION, V.VFIO_TYPE1_NESTING_IOMMU) == 1


def test_check_extension_unmap_all_before_5_12(make_kernel):
    k = make_kernel("x86", kernel="5.11")
    c = k.open("/dev/vfio/vfio")
    assert k.ioctl(c, V.VFIO_CHECK_EXTENSION, V.VFIO_UNMAP_ALL) == 0


def test_set_iommu_without_group_is_einval(x86):
    c = x86.open("/dev/vfio/vfio")
    expect_errno(errno.EINVAL, x86.ioctl, c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)


def test_set_iommu_twice_is_einval(x86):
    c, _ = attach(x86)
    expect_errno(errno.EINVAL, x86.ioctl, c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)


@pytest.mark.parametrize("iommu_type", [
    P.VFIO_FSL_PAMU_IOMMU, V.VFIO_NOIOMMU_IOMMU, V.VFIO_SPAPR_TCE_v2_IOMMU, 0, 999])
def test_set_iommu_unsupported_type_is_enodev_x86(x86, iommu_type):
    c, _ = attach(x86, iommu=None)
    expect_errno(errno.ENODEV, x86.ioctl, c, V.VFIO_SET_IOMMU, iommu_type)


@pytest.mark.parametrize("iommu_type", [V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU,
                                        V.VFIO_NOIOMMU_IOMMU])
def test_set_iommu_type1_on_p4080_is_enodev(p4080, iommu_type):
    c, _ = attach(p4080, iommu=None)
    expect_errno(errno.ENODEV, p4080.ioctl, c, V.VFIO_SET_IOMMU, iommu_type)


def test_set_iommu_extension_that_is_not_a_type_is_backend_error(x86):
    # UNMAP_ALL passes CHECK_EXTENSION, then Type1's open() refuses it.
    c, _ = attach(x86, iommu=None)
    expect_errno(errno.EINVAL, x86.ioctl, c, V.VFIO_SET_IOMMU, V.VFIO_UNMAP_ALL)
    # The container is still usable.
    assert x86.ioctl(c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1_IOMMU) == 0


def test_backend_ioctl_before_set_iommu_is_einval(x86):
    c, _ = attach(x86, iommu=None)
    for req in (V.VFIO_IOMMU_GET_INFO, V.VFIO_IOMMU_MAP_DMA, V.VFIO_IOMMU_UNMAP_DMA, 0x1234):
        expect_errno(errno.EINVAL, x86.ioctl, c, req, bytearray(64))


def test_unknown_ioctl_after_set_iommu_is_enotty(x86):
    c, _ = attach(x86)
    expect_errno(errno.ENOTTY, x86.ioctl, c, 0x3b7f, bytearray(64))
    expect_errno(errno.ENOTTY, x86.ioctl, c, P.VFIO_IOMMU_PAMU_GET_ATTR, bytearray(64))


def test_unknown_ioctl_on_pamu_container_is_enotty(p4080):
    c, _ = attach(p4080, iommu=P.VFIO_FSL_PAMU_IOMMU)
    expect_errno(errno.ENOTTY, p4080.ioctl, c, 0x3b7f, bytearray(64))


def test_container_read_write_are_einval(x86):
    c, _ = attach(x86)
    expect_errno(errno.EINVAL, x86.pread, c, 8, 0)
    expect_errno(errno.EINVAL, x86.pwrite, c, b"12345678", 0)


def test_container_mmap_is_enodev(x86):
    c = x86.open("/dev/vfio/vfio")
    expect_errno(errno.ENODEV, x86.mmap, c, 4096)


def test_container_mmap_is_einval_before_5_15(make_kernel):
    k = make_kernel("x86", kernel="5.10")
    c = k.open("/dev/vfio/vfio")
    expect_errno(errno.EINVAL, k.mmap, c, 4096)


def test_several_groups_share_one_container(x86):
    c, g1 = attach(x86, group=1)
    g2 = x86.open("/dev/vfio/2")
    assert set_container(x86, g2, c) == 0  # attached straight to the existing backend
    dump = x86.dump()
    assert dump["containers"][0]["groups"] == [1, 2]


def test_several_containers_are_independent(x86):
    c1, _ = attach(x86, group=1)
    c2, _ = attach(x86, group=2, iommu=V.VFIO_TYPE1_IOMMU)
    assert c1 != c2
    assert len(x86.dump()["containers"]) == 2


def test_container_lives_while_groups_reference_it(x86):
    c, g = attach(x86)
    x86.close(c)
    # The group still uses the container: status says so, and the backend is still there.
    st = x86.dump()["groups"][0]
    assert st["attached"] and st["container_users"] == 1
    assert x86.dump()["containers"][0]["backend"] is not None
    x86.close(g)
    assert x86.dump()["containers"] == []


def test_bad_fd_is_ebadf(x86):
    expect_errno(errno.EBADF, x86.ioctl, 999, V.VFIO_GET_API_VERSION)
    c = x86.open("/dev/vfio/vfio")
    x86.close(c)
    expect_errno(errno.EBADF, x86.ioctl, c, V.VFIO_GET_API_VERSION)
    expect_errno(errno.EBADF, x86.close, c)


def test_read_only_open_is_accepted(x86):
    c = x86.open("/dev/vfio/vfio", os.O_RDONLY)
    g = x86.open("/dev/vfio/1", os.O_RDONLY)
    assert set_container(x86, g, c) == 0
    assert x86.ioctl(c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU) == 0
