"""Group ioctls and the group/device state machine.  SPEC §4.1, §4.2, §4.4, §4.6, §13.2."""

from __future__ import annotations

import errno

import pytest
from vfio_helpers import (
    attach,
    device_name,
    expect_errno,
    get_device_fd,
    group_status,
    set_container,
)

from vfiosim import Kernel
from vfiosim.machine import load_preset, parse_machine
from vfiosim.uapi import vfio as V

VIABLE = V.VFIO_GROUP_FLAGS_VIABLE
CONTAINER_SET = V.VFIO_GROUP_FLAGS_CONTAINER_SET


def test_open_unknown_path_is_enoent(x86):
    for path in ("/dev/vfio/99", "/dev/vfio/", "/dev/vfio/abc", "/dev/vfio/01", "/dev/null"):
        expect_errno(errno.ENOENT, x86.open, path)


def test_open_group_twice_is_ebusy(x86):
    x86.open("/dev/vfio/1")
    expect_errno(errno.EBUSY, x86.open, "/dev/vfio/1")


def test_open_group_twice_while_attached_is_ebusy(x86):
    attach(x86)
    expect_errno(errno.EBUSY, x86.open, "/dev/vfio/1")


def test_group_reopens_after_close(x86):
    g = x86.open("/dev/vfio/1")
    x86.close(g)
    x86.close(x86.open("/dev/vfio/1"))


def test_get_status_flags_before_and_after_set_container(x86):
    c = x86.open("/dev/vfio/vfio")
    g = x86.open("/dev/vfio/1")
    assert group_status(x86, g) == VIABLE
    set_container(x86, g, c)
    assert group_status(x86, g) == VIABLE | CONTAINER_SET
    x86.ioctl(g, V.VFIO_GROUP_UNSET_CONTAINER)
    assert group_status(x86, g) == VIABLE


def test_get_status_argsz_below_minsz_is_einval(x86):
    g = x86.open("/dev/vfio/1")
    st = V.vfio_group_status(argsz=7)
    expect_errno(errno.EINVAL, x86.ioctl, g, V.VFIO_GROUP_GET_STATUS, st)
    assert st.flags == 0


def test_get_status_writes_only_minsz(x86):
    g = x86.open("/dev/vfio/1")
    buf = bytearray(b"\xaa" * 16)
    buf[0:4] = (16).to_bytes(4, "little")
    x86.ioctl(g, V.VFIO_GROUP_GET_STATUS, buf)
    assert buf[4:8] == VIABLE.to_bytes(4, "little")
    assert buf[8:] == b"\xaa" * 8


def test_get_status_short_buffer_is_efault(x86):
    g = x86.open("/dev/vfio/1")
    expect_errno(errno.EFAULT, x86.ioctl, g, V.VFIO_GROUP_GET_STATUS, bytearray(4))


def test_set_container_fd_minus_one_is_ebadf(x86):
    g = x86.open("/dev/vfio/1")
    expect_errno(errno.EBADF, set_container, x86, g, -1)


def test_set_container_fd_minus_one_is_einval_before_6_1(make_kernel):
    k = make_kernel("x86", kernel="6.0")
    g = k.open("/dev/vfio/1")
    expect_errno(errno.EINVAL, set_container, k, g, -1)


def test_set_container_closed_fd_is_ebadf(x86):
    g = x86.open("/dev/vfio/1")
    c = x86.open("/dev/vfio/vfio")
    x86.close(c)
    expect_errno(errno.EBADF, set_container, x86, g, c)


def test_set_container_non_container_fd_is_ebadfd(x86):
    g1 = x86.open("/dev/vfio/1")
    g2 = x86.open("/dev/vfio/2")
    expect_errno(errno.EBADFD, set_container, x86, g1, g2)


@pytest.mark.parametrize("profile,code", [("6.1", errno.EINVAL), ("6.2", errno.EBADFD)])
def test_set_container_non_container_fd_by_profile(make_kernel, profile, code):
    k = make_kernel("x86", kernel=profile)
    g1 = k.open("/dev/vfio/1")
    g2 = k.open("/dev/vfio/2")
    expect_errno(code, set_container, k, g1, g2)


def test_set_container_twice_is_einval(x86):
    c, g = attach(x86, iommu=None)
    expect_errno(errno.EINVAL, set_container, x86, g, c)


def test_set_container_attached_checked_before_fd_on_profile_6_0(make_kernel):
    # Before 6.1 the attached check comes before the fd lookup: a bad fd still says EINVAL.
    k = make_kernel("x86", kernel="6.0")
    c, g = attach(k, iommu=None)
    expect_errno(errno.EINVAL, set_container, k, g, 999)
    k2 = make_kernel("x86")
    c2, g2 = attach(k2, iommu=None)
    expect_errno(errno.EINVAL, set_container, k2, g2, c2)
    expect_errno(errno.EBADF, set_container, k2, g2, 999)


def test_set_container_unreadable_arg_is_efault(x86):
    g = x86.open("/dev/vfio/1")
    expect_errno(errno.EFAULT, x86.ioctl, g, V.VFIO_GROUP_SET_CONTAINER, bytearray(2))


def _host_bound_kernel(profile: str = "6.18") -> Kernel:
    spec = load_preset("x86")
    spec.devices[0]["driver"] = "e1000e"
    return Kernel(spec, clock="manual", kernel=profile)


def test_non_viable_group_set_container_is_eperm():
    k = _host_bound_kernel()
    try:
        c = k.open("/dev/vfio/vfio")
        g = k.open("/dev/vfio/1")
        assert group_status(k, g) == 0
        expect_errno(errno.EPERM, set_container, k, g, c)
        assert group_status(k, g) == 0
    finally:
        k.shutdown()


def test_non_viable_group_before_5_19_attaches_but_device_open_fails():
    k = _host_bound_kernel("5.18")
    try:
        c = k.open("/dev/vfio/vfio")
        g = k.open("/dev/vfio/1")
        assert group_status(k, g) == 0
        set_container(k, g, c)
        assert group_status(k, g) == CONTAINER_SET
        k.ioctl(c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
        expect_errno(errno.EINVAL, get_device_fd, k, g, "0000:01:00.0")
    finally:
        k.shutdown()


def test_unset_container_without_container_is_einval(x86):
    g = x86.open("/dev/vfio/1")
    expect_errno(errno.EINVAL, x86.ioctl, g, V.VFIO_GROUP_UNSET_CONTAINER)


def test_unset_container_with_device_fd_open_is_ebusy(x86):
    c, g = attach(x86)
    d = get_device_fd(x86, g, device_name(x86, 1))
    expect_errno(errno.EBUSY, x86.ioctl, g, V.VFIO_GROUP_UNSET_CONTAINER)
    x86.close(d)
    assert x86.ioctl(g, V.VFIO_GROUP_UNSET_CONTAINER) == 0


def test_unset_last_group_releases_backend(x86):
    c, g = attach(x86)
    x86.ioctl(g, V.VFIO_GROUP_UNSET_CONTAINER)
    # Deprivileged: backend ioctls are EINVAL again and SET_IOMMU needs a group again.
    expect_errno(errno.EINVAL, x86.ioctl, c, V.VFIO_IOMMU_GET_INFO, bytearray(128))
    expect_errno(errno.EINVAL, x86.ioctl, c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
    set_container(x86, g, c)
    assert x86.ioctl(c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1_IOMMU) == 0


def test_get_device_fd_before_set_iommu_is_einval(x86):
    c, g = attach(x86, iommu=None)
    expect_errno(errno.EINVAL, get_device_fd, x86, g, device_name(x86, 1))


def test_get_device_fd_without_container_is_einval(x86):
    g = x86.open("/dev/vfio/1")
    expect_errno(errno.EINVAL, get_device_fd, x86, g, device_name(x86, 1))


def test_get_device_fd_unknown_name_is_enodev_even_unattached(x86):
    g = x86.open("/dev/vfio/1")
    expect_errno(errno.ENODEV, get_device_fd, x86, g, "0000:09:00.0")
    # A device of another group is unknown to this one.
    expect_errno(errno.ENODEV, get_device_fd, x86, g, device_name(x86, 2))


def test_get_device_fd_unknown_name_unattached_is_einval_before_6_0(make_kernel):
    k = make_kernel("x86", kernel="5.19")
    g = k.open("/dev/vfio/1")
    expect_errno(errno.EINVAL, get_device_fd, k, g, "0000:09:00.0")


@pytest.mark.parametrize("suffix", [" vf_token=2ab74924-c335-45f4-9b16-8569e5b08258",
                                    " vf_token=2ab7", " foo=1", "  x"])
def test_get_device_fd_name_options_are_einval(x86, suffix):
    # vfio_pci_core_match(): a VF token for a device that is neither PF nor VF, a malformed
    # token and an unknown option are all refused.
    c, g = attach(x86)
    expect_errno(errno.EINVAL, get_device_fd, x86, g, device_name(x86, 1) + suffix)


@pytest.mark.parametrize("suffix,code", [("   ", None), ("x", errno.ENODEV),
                                         (".1", errno.ENODEV)])
def test_get_device_fd_name_followed_by_spaces_or_other_text(x86, suffix, code):
    c, g = attach(x86)
    name = device_name(x86, 1) + suffix
    if code is None:
        assert get_device_fd(x86, g, name) > 0
    else:
        expect_errno(code, get_device_fd, x86, g, name)


def test_get_device_fd_name_without_nul_in_a_page_is_einval(x86):
    c, g = attach(x86)
    expect_errno(errno.EINVAL, x86.ioctl, g, V.VFIO_GROUP_GET_DEVICE_FD, bytearray(b"x" * 5000))


def test_get_device_fd_unterminated_short_buffer_is_efault(x86):
    c, g = attach(x86)
    expect_errno(errno.EFAULT, x86.ioctl, g, V.VFIO_GROUP_GET_DEVICE_FD, bytearray(b"0000:01"))


def test_get_device_fd_returns_new_fd_each_time(x86):
    c, g = attach(x86)
    d1 = get_device_fd(x86, g, device_name(x86, 1))
    d2 = get_device_fd(x86, g, device_name(x86, 1))
    assert len({c, g, d1, d2}) == 4
    assert x86.fd_kind(d1) == "device"
    assert x86.dump()["groups"][0]["container_users"] == 3


def test_closing_group_fd_keeps_group_attached_while_device_open(x86):
    c, g = attach(x86)
    d = get_device_fd(x86, g, device_name(x86, 1))
    x86.close(g)
    st = x86.dump()["groups"][0]
    assert st["attached"] and st["open"]
    expect_errno(errno.EBUSY, x86.open, "/dev/vfio/1")
    x86.close(d)
    st = x86.dump()["groups"][0]
    assert not st["attached"] and not st["open"]
    assert x86.dump()["containers"][0]["backend"] is None  # last group left: released
    x86.close(x86.open("/dev/vfio/1"))


def test_unknown_group_ioctl_is_enotty(x86):
    g = x86.open("/dev/vfio/1")
    for req in (V.VFIO_GET_API_VERSION, V.VFIO_IOMMU_MAP_DMA, 0x3b7e, 0):
        expect_errno(errno.ENOTTY, x86.ioctl, g, req, bytearray(64))


def test_pamu_group_attach(p4080):
    from vfiosim.uapi import vfio_pamu as P

    c, g = attach(p4080, iommu=P.VFIO_FSL_PAMU_IOMMU)
    assert group_status(p4080, g) == VIABLE | CONTAINER_SET


def test_machine_file_group_spans_only_its_controller():
    doc = {
        "machine": {"iommu": "fsl_pamu"},
        "pcie_controller": [{"index": 0, "liodn": 1}, {"index": 1, "liodn": 2}],
        "device": [
            {"name": "0000:01:00.0", "model": "edu", "group": 1, "controller": 0},
            {"name": "0001:01:00.0", "model": "edu", "group": 1, "controller": 1},
        ],
    }
    with pytest.raises(ValueError, match="share its IOMMU group"):
        parse_machine(doc, "board.toml")


