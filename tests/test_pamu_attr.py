"""PAMU container: CHECK_EXTENSION, SET_IOMMU, GET/SET_ATTR, GET_MSI_BANK_COUNT, attach/detach.

SPEC §6.2–§6.4, §7.1–§7.3, §13.4.  PAACE values are checked against encodings computed by hand
from fsl_pamu.h (WSE: size = 2^(WSE+1); WCE: count = 2^(WCE+1)).
"""

from __future__ import annotations

import ctypes
import errno
import os

import pytest
from pamu_helpers import (
    APERTURE_MAX,
    RW,
    Buffer,
    MiB,
    Pamu,
    expect_errno,
    make_attr,
    open_pamu,
)

from vfiosim.kernel.iommu.pamu import PamuBackend, PamuDriver
from vfiosim.uapi import vfio as V
from vfiosim.uapi import vfio_pamu as P

ATTRS = (P.VFIO_ATTR_GEOMETRY, P.VFIO_ATTR_WINDOWS, P.VFIO_ATTR_PAMU_STASH)


@pytest.fixture
def p(p4080) -> Pamu:  # noqa: ANN001
    return open_pamu(p4080)


# ---------------------------------------------------------------------------------------------
# CHECK_EXTENSION, SET_IOMMU, GET_MSI_BANK_COUNT (§6.2, §6.4)


@pytest.mark.parametrize("preset", ["p4080", "t4240"])
def test_check_extension_only_pamu(make_kernel, preset: str) -> None:
    k = make_kernel(preset)
    p = open_pamu(k, set_iommu=False)
    for ext, want in [(P.VFIO_FSL_PAMU_IOMMU, 1), (V.VFIO_TYPE1_IOMMU, 0),
                      (V.VFIO_TYPE1v2_IOMMU, 0), (V.VFIO_UNMAP_ALL, 0), (99, 0)]:
        assert k.ioctl(p.cfd, V.VFIO_CHECK_EXTENSION, ext) == want
    assert k.ioctl(p.cfd, V.VFIO_SET_IOMMU, P.VFIO_FSL_PAMU_IOMMU) == 0
    for ext, want in [(P.VFIO_FSL_PAMU_IOMMU, 1), (V.VFIO_TYPE1_IOMMU, 0), (3, 0)]:
        assert k.ioctl(p.cfd, V.VFIO_CHECK_EXTENSION, ext) == want


def test_set_iommu_type1_on_p4080_is_enodev(p4080) -> None:
    p = open_pamu(p4080, set_iommu=False)
    expect_errno(errno.ENODEV, p4080.ioctl, p.cfd, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
    expect_errno(errno.ENODEV, p4080.ioctl, p.cfd, V.VFIO_SET_IOMMU, V.VFIO_TYPE1_IOMMU)


def test_driver_open_other_type_einval(p4080) -> None:
    expect_errno(errno.EINVAL, PamuDriver.open, p4080.machine, V.VFIO_TYPE1_IOMMU)
    assert isinstance(PamuDriver.open(p4080.machine, P.VFIO_FSL_PAMU_IOMMU), PamuBackend)


@pytest.mark.parametrize("preset,banks", [("p4080", 3), ("t4240", 4)])
def test_msi_bank_count(make_kernel, preset: str, banks: int) -> None:
    for mode in ("auto", "explicit"):
        p = open_pamu(make_kernel(preset, msi_mode=mode))
        assert p.bank_count() == banks
        assert p.ioctl(P.VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT, 12345) == banks


def test_unknown_container_ioctl_enotty(p: Pamu) -> None:
    expect_errno(errno.ENOTTY, p.ioctl, 0x1234)
    expect_errno(errno.ENOTTY, p.ioctl, V._IO(V.VFIO_TYPE, V.VFIO_BASE + 25))


def test_attach_same_group_twice_einval(p: Pamu) -> None:
    group = p.k._file(p.gfds[1]).group  # type: ignore[attr-defined]
    expect_errno(errno.EINVAL, p.backend.attach_group, group)


# ---------------------------------------------------------------------------------------------
# argsz, flags, attribute (§6.3 first table, §3.7)


@pytest.mark.parametrize("request_", [P.VFIO_IOMMU_PAMU_GET_ATTR, P.VFIO_IOMMU_PAMU_SET_ATTR])
def test_attr_argsz_flags_attribute(p: Pamu, request_: int) -> None:
    minsz = V.offsetofend(P.vfio_pamu_attr, "attr_info")
    assert minsz == 32
    for attribute in ATTRS:
        a = make_attr(attribute, argsz=minsz - 1)
        expect_errno(errno.EINVAL, p.ioctl, request_, a)
        a = make_attr(attribute, flags=1)
        expect_errno(errno.EINVAL, p.ioctl, request_, a)
        a = make_attr(attribute, flags=0x8000_0000)
        expect_errno(errno.EINVAL, p.ioctl, request_, a)
    for attribute in (3, 4, 0xFFFF_FFFF):
        expect_errno(errno.EINVAL, p.ioctl, request_, make_attr(attribute))


def test_attr_short_buffer_efault(p: Pamu) -> None:
    buf = bytearray(bytes(make_attr(P.VFIO_ATTR_WINDOWS))[:24])
    expect_errno(errno.EFAULT, p.ioctl, P.VFIO_IOMMU_PAMU_GET_ATTR, buf)


def test_get_attr_trailing_bytes_untouched(p: Pamu) -> None:
    """argsz > 32 with garbage after the struct: answered like argsz = 32, tail untouched."""
    buf = bytearray(b"\xAA" * 48)
    a = P.vfio_pamu_attr.from_buffer(buf)
    a.argsz, a.flags, a.attribute = 48, 0, P.VFIO_ATTR_GEOMETRY
    assert p.ioctl(P.VFIO_IOMMU_PAMU_GET_ATTR, buf) == 0
    assert a.attr_info.attr.aperture_start == 0
    assert a.attr_info.attr.aperture_end == APERTURE_MAX
    assert buf[32:] == b"\xAA" * 16


def test_get_windows_copies_back_the_struct(p: Pamu) -> None:
    """GET WINDOWS writes the count into the union; the rest of the 32 bytes as read."""
    a = make_attr(P.VFIO_ATTR_WINDOWS)
    raw = bytearray(bytes(a))
    raw[20:32] = b"\x55" * 12  # union bytes past `windows`
    raw[12:16] = b"\x77" * 4  # padding after `attribute`
    assert p.ioctl(P.VFIO_IOMMU_PAMU_GET_ATTR, raw) == 0
    assert raw[16:20] == (256).to_bytes(4, "little")
    assert raw[20:32] == b"\x55" * 12
    assert raw[12:16] == b"\x77" * 4


# ---------------------------------------------------------------------------------------------
# defaults


@pytest.mark.parametrize("preset", ["p4080", "t4240"])
def test_defaults(make_kernel, preset: str) -> None:
    p = open_pamu(make_kernel(preset))
    assert p.windows() == 256
    assert p.geometry() == (0, APERTURE_MAX)
    assert p.stash() == (0, 0)


# ---------------------------------------------------------------------------------------------
# GEOMETRY


@pytest.mark.parametrize("start,end", [
    (0, 0x2FFF),                      # 12 KiB: not a power of two
    (0, 0x7FF),                       # 2 KiB: below the PAMU page
    (0, 0),                           # 1 byte
    (0x1000, 0x2FFF),                 # 8 KiB at 4 KiB: start not a multiple of the size
    (0x10_0000, 0x20_0000 + 0xF_FFFF),  # 2 MiB at 1 MiB
    (0, (1 << 37) - 1),               # end > 2^36 - 1
    (1 << 36, (1 << 37) - 1),         # aligned, but beyond 2^36 - 1
    (0x2000, 0x1FFF),                 # end < start: size 0
    (0x4000, 0x1FFF),                 # end < start: size wraps
    (0, (1 << 64) - 1),               # size 2^64 wraps to 0
])
def test_geometry_einval(p: Pamu, start: int, end: int) -> None:
    expect_errno(errno.EINVAL, p.set_geometry, start, end)
    assert p.geometry() == (0, APERTURE_MAX)


@pytest.mark.parametrize("start,end", [
    (0, 0xFFF), (0, 32 * MiB - 1), (0x4000_0000, 0x7FFF_FFFF), (0, APERTURE_MAX),
    (0xF_FFFF_F000, APERTURE_MAX), (0x8_0000_0000, APERTURE_MAX),
])
def test_geometry_accepted(p: Pamu, start: int, end: int) -> None:
    assert p.set_geometry(start, end) == 0
    assert p.geometry() == (start, end)
    # Recorded only: the LIODN is still invalid (attached before WINDOWS).
    assert p.paace(1)["v"] == 0


def test_geometry_after_windows_unconfigures(make_kernel) -> None:
    """[proposed, Appendix A #15] GEOMETRY after WINDOWS: WINDOWS must be set again."""
    k = make_kernel("p4080", msi_mode="explicit")
    p = open_pamu(k)
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    spaace_free = k.machine.pamu.spaace_free_count()
    p.map_msi_bank(0, 15 * 2 * MiB)
    assert p.paace(1)["mw"] == 1
    p.set_geometry(0, 64 * MiB - 1)
    assert p.windows() == 256
    assert p.geometry() == (0, 64 * MiB - 1)
    assert p.backend.msi_dma_list == []
    assert p.paace(1)["v"] == 0 and p.paace(1)["mw"] == 0
    assert k.machine.pamu.spaace_free_count() == spaace_free + 15
    b = Buffer(4 * MiB)
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 0, 4 * MiB)  # windows not configured
    p.set_windows(16)
    assert p.windows() == 16 and p.backend.window_size == 4 * MiB
    b.close()


# ---------------------------------------------------------------------------------------------
# WINDOWS


def test_windows_before_geometry_einval(p: Pamu) -> None:
    expect_errno(errno.EINVAL, p.set_windows, 16)
    assert p.windows() == 256


@pytest.mark.parametrize("count", [0, 3, 6, 255, 257, 512, 1 << 31])
def test_windows_bad_count_einval(p: Pamu, count: int) -> None:
    p.set_geometry(0, 32 * MiB - 1)
    expect_errno(errno.EINVAL, p.set_windows, count)
    assert p.windows() == 256


@pytest.mark.parametrize("count", [1, 2, 16, 256])
def test_windows_accepted(p: Pamu, count: int) -> None:
    p.set_geometry(0, 32 * MiB - 1)
    assert p.set_windows(count) == 0
    assert p.windows() == count
    assert p.backend.window_size == 32 * MiB // count


def test_windows_below_pamu_page_einval(p: Pamu) -> None:
    """[kernel pamu_config_spaace] a 64 KiB aperture in 32 windows: 2 KiB subwindows."""
    p.set_geometry(0, 0xFFFF)
    expect_errno(errno.EINVAL, p.set_windows, 32)
    assert p.windows() == 256
    assert p.set_windows(16) == 0  # 4 KiB subwindows
    assert p.windows() == 16


def test_windows_256_ten_times(p: Pamu) -> None:
    """[decision D18] the previous SPAACE block is freed: repeated WINDOWS never exhausts
    the 2048-entry SPAACT."""
    pamu = p.machine.pamu
    free0 = pamu.spaace_free_count()
    p.set_geometry(0, APERTURE_MAX)
    for _ in range(10):
        assert p.set_windows(256) == 0
        assert pamu.spaace_free_count() == free0 - 255
    assert p.set_windows(2) == 0
    assert pamu.spaace_free_count() == free0 - 1
    assert p.set_windows(1) == 0
    assert pamu.spaace_free_count() == free0


def test_windows_paace_encoding(p: Pamu) -> None:
    """§7.2/§7.3: 32 MiB aperture at 0 in 16 windows of 2 MiB."""
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    f = p.paace(1)
    assert f["wbah"] == 0 and f["wbal"] == 0
    assert f["wse"] == 24  # 2^25 = 32 MiB
    assert f["mw"] == 1
    assert f["wce"] == 3  # 2^4 = 16 windows
    assert f["pt"] == 0
    assert f["v"] == 0  # disabled until the first MAP_DMA
    # subwindow 0 lives in the primary: window translation, 2 MiB, TWBA 0, denied
    assert f["atm"] == 1
    assert f["swse"] == 20  # 2^21 = 2 MiB
    assert f["twba"] == 0 and f["ap"] == 0
    d = p.machine.pamu.dump(p.liodn(1))
    assert [s["window"] for s in d["spaaces"]] == list(range(1, 16))
    for s in d["spaaces"]:
        assert s["v"] == 0 and s["liodn"] == p.liodn(1) and s["pt"] == 1
        assert s["swse"] == 20 and s["ap"] == 0
    assert [s["index"] for s in d["spaaces"]] == list(range(f["fspi"], f["fspi"] + 15))


def test_windows_one_paace_encoding(p: Pamu) -> None:
    """WINDOWS = 1: a single window, MW 0, ATM 1, WSE from the aperture."""
    p.set_geometry(0x4000_0000, 0x7FFF_FFFF)
    p.set_windows(1)
    f = p.paace(1)
    assert f["mw"] == 0 and f["wse"] == 29  # 2^30
    assert f["wba"] == 0x4000_0000 and f["wbah"] == 0 and f["wbal"] == 0x40000
    assert f["atm"] == 1 and f["ap"] == 0 and f["v"] == 0


def test_geometry_high_base_encoding(p: Pamu) -> None:
    p.set_geometry(0x8_0000_0000, APERTURE_MAX)
    p.set_windows(4)
    f = p.paace(1)
    assert f["wbah"] == 0x8 and f["wbal"] == 0 and f["wse"] == 34  # 2^35
    assert f["wce"] == 1


def test_windows_discards_msi_mappings(make_kernel) -> None:
    k = make_kernel("p4080", msi_mode="explicit")
    p = open_pamu(k)
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    p.map_msi_bank(0, 0)
    assert [w.kind for w in p.backend.window_table()][0] == "msi"
    p.set_windows(8)
    assert all(w.kind == "free" for w in p.backend.window_table())
    assert p.backend.msi_dma_list == []
    expect_errno(errno.ENODEV, p.backend.msi_address, None, 0xF_FE04_4140)
    assert p.paace(1)["ap"] == 0  # window 0 denied again


# ---------------------------------------------------------------------------------------------
# EBUSY while a DMA mapping exists


def test_geometry_and_windows_busy(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = open_pamu(k)
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    b = Buffer(2 * MiB)
    p.map_dma(b.addr, 0, 2 * MiB)
    assert p.backend.enabled
    expect_errno(errno.EBUSY, p.set_geometry, 0, 64 * MiB - 1)
    expect_errno(errno.EBUSY, p.set_windows, 8)
    # Order [kernel]: GEOMETRY checks the geometry first, WINDOWS the enabled state first.
    expect_errno(errno.EINVAL, p.set_geometry, 0, 3 * MiB - 1)
    expect_errno(errno.EBUSY, p.set_windows, 3)
    expect_errno(errno.EBUSY, p.set_windows, 0)
    assert p.windows() == 16 and p.geometry() == (0, 32 * MiB - 1)
    assert p.unmap_dma(0, 2 * MiB) == 2 * MiB
    assert not p.backend.enabled
    assert p.set_windows(8) == 0
    assert p.set_geometry(0, 64 * MiB - 1) == 0
    b.close()


# ---------------------------------------------------------------------------------------------
# PAMU_STASH


@pytest.mark.parametrize("cache", [0, 4, 0xFFFF_FFFF])
def test_stash_bad_cache(p: Pamu, cache: int) -> None:
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    expect_errno(errno.EINVAL, p.set_stash, 0, cache)
    # quirk [kernel configure_domain_stash]: the attribute is stored before get_stash_id()
    assert p.stash() == (0, cache)


@pytest.mark.parametrize("preset,cpu", [("p4080", 8), ("t4240", 24), ("p4080", 0xFFFF_FFFF)])
def test_stash_bad_cpu(make_kernel, preset: str, cpu: int) -> None:
    p = open_pamu(make_kernel(preset))
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    for cache in (1, 2, 3):  # [decision D4] also for L3, whose path never looks at cpu
        expect_errno(errno.EINVAL, p.set_stash, cpu, cache)


def test_stash_cache_checked_before_cpu(p: Pamu) -> None:
    expect_errno(errno.EINVAL, p.set_stash, 99, 0)


def test_stash_before_windows(p: Pamu) -> None:
    """[kernel update_liodn_stash] "Windows not configured" → EINVAL."""
    expect_errno(errno.EINVAL, p.set_stash, 0, P.PAMU_ATTR_CACHE_L1)
    p.set_geometry(0, 32 * MiB - 1)
    expect_errno(errno.EINVAL, p.set_stash, 0, P.PAMU_ATTR_CACHE_L1)


def test_stash_refused_before_windows_applies_at_windows(p: Pamu) -> None:
    """quirk [kernel configure_domain_stash]: the attribute and its stash id are stored before
    the LIODNs are updated, so WINDOWS programs the refused request."""
    p.set_geometry(0, 32 * MiB - 1)
    expect_errno(errno.EINVAL, p.set_stash, 2, P.PAMU_ATTR_CACHE_L2)
    assert p.stash() == (2, P.PAMU_ATTR_CACHE_L2)
    p.set_windows(4)
    assert p.paace(1)["cid"] == 33 + 2 * 2


@pytest.mark.parametrize("cpu,cache,cid", [
    (0, P.PAMU_ATTR_CACHE_L1, 32),      # e500mc: L1 = 32 + 2c
    (3, P.PAMU_ATTR_CACHE_L2, 39),      # L2 = 33 + 2c
    (7, P.PAMU_ATTR_CACHE_L1, 46),
    (5, P.PAMU_ATTR_CACHE_L3, 1),       # the CPC
])
def test_stash_p4080_programs_cid(p: Pamu, cpu: int, cache: int, cid: int) -> None:
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(4)
    assert p.set_stash(cpu, cache) == 0
    assert p.stash() == (cpu, cache)
    assert p.paace(1)["cid"] == cid
    for s in p.machine.pamu.dump(p.liodn(1))["spaaces"]:
        assert s["cid"] == cid


@pytest.mark.parametrize("cpu,cache,cid", [
    (0, P.PAMU_ATTR_CACHE_L1, 33),      # A-007907: L1 programmed as the cluster's L2
    (23, P.PAMU_ATTR_CACHE_L1, 37),     # thread 23: cluster 2, L2 = 33 + 2·2
    (9, P.PAMU_ATTR_CACHE_L2, 35),
    (23, P.PAMU_ATTR_CACHE_L3, 1),
])
def test_stash_t4240_erratum(make_kernel, cpu: int, cache: int, cid: int) -> None:
    p = open_pamu(make_kernel("t4240"))
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(4)
    assert p.set_stash(cpu, cache) == 0
    assert p.stash() == (cpu, cache)  # [proposed, Appendix A #29] the requested value
    assert p.paace(1)["cid"] == cid
    for s in p.machine.pamu.dump(p.liodn(1))["spaaces"]:
        assert s["cid"] == cid


def test_stash_reapplied_on_window_enable(make_kernel) -> None:
    """The stash id goes with every window enabled later (update_liodn passes stash_id)."""
    k = make_kernel("p4080", contiguous_memory=True)
    p = open_pamu(k)
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    p.set_stash(1, P.PAMU_ATTR_CACHE_L1)
    b = Buffer(4 * MiB)
    p.map_dma(b.addr, 2 * MiB, 4 * MiB)
    assert p.spaace(1, 1)["cid"] == 34 and p.spaace(1, 2)["cid"] == 34
    assert p.spaace(1, 15)["cid"] == 34  # bank 0's window
    b.close()


# ---------------------------------------------------------------------------------------------
# attach / detach (§6.2, §7.3)


def test_attach_before_windows_blocks_dma(p4080) -> None:
    """[decision D18] the boot identity window is replaced by V = 0 at attach."""
    liodn = p4080.machine.devices[0].rid
    f = p4080.machine.pamu.paace_fields(liodn)
    assert f["v"] == 1 and f["wse"] == 35 and f["atm"] == 0  # boot identity
    assert p4080.machine.pamu.translate(liodn, 0x1000, 4, True) == [(0x1000, 4)]
    p = open_pamu(p4080)
    assert p.paace(1)["v"] == 0
    assert p.translate(1, 0x1000, 4, True) is None


def test_attach_to_enabled_domain_blocked_until_next_map(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True, av_disables_liodn=False)
    p = open_pamu(k, groups=(1,))
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    b = Buffer(8 * MiB)
    p.map_dma(b.addr, 0, 2 * MiB, RW)
    assert p.translate(1, 0x100, 4, True) is not None
    g2 = k.open("/dev/vfio/2", os.O_RDWR)
    k.ioctl(g2, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(p.cfd))
    p.gfds[2] = g2
    # Programmed and replayed, but disabled.
    f2 = p.paace(2)
    assert f2["v"] == 0 and f2["mw"] == 1 and f2["wce"] == 3
    assert f2["twba"] == p.paace(1)["twba"] and f2["ap"] == 3
    assert p.spaace(2, 15)["v"] == 1 and p.spaace(2, 15)["ap"] == 2
    assert p.translate(2, 0x100, 4, True) is None
    assert p.translate(2, 0x1E0_0140, 4, True) is None  # its MSIs too
    p.map_dma(b.addr + 2 * MiB, 2 * MiB, 2 * MiB, RW)
    assert p.translate(2, 0x100, 4, True) == p.translate(1, 0x100, 4, True)
    assert p.translate(2, 0x1E0_0140, 4, True) == [(0xF_FE04_4140, 4)]
    # detach: subwindows freed, V = 0
    free = k.machine.pamu.spaace_free_count()
    k.ioctl(g2, V.VFIO_GROUP_UNSET_CONTAINER)
    f2 = p.paace(2)
    assert f2["v"] == 0 and f2["mw"] == 0
    assert k.machine.pamu.spaace_free_count() == free + 15
    assert p.translate(2, 0x100, 4, True) is None
    assert p.translate(1, 0x100, 4, True) is not None
    b.close()


def test_attach_while_windows_set_domain_disabled(make_kernel) -> None:
    k = make_kernel("p4080", msi_mode="explicit")
    p = open_pamu(k, groups=(1,))
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    p.map_msi_bank(1, 3 * 2 * MiB)
    g2 = k.open("/dev/vfio/2", os.O_RDWR)
    k.ioctl(g2, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(p.cfd))
    s = p.spaace(2, 3)
    assert s["v"] == 1 and s["twba"] == 0xF_FE04_5000 and s["swse"] == 11 and s["ap"] == 3
    assert p.paace(2)["v"] == 0


def test_attach_liodn_outside_paact_einval(tmp_path) -> None:  # noqa: ANN001
    """SPEC §7.1 [kernel handle_attach_device]: a LIODN ≥ PAACE_NUMBER_ENTRIES (0x500) cannot
    attach: SET_IOMMU fails with EINVAL and the group stays without a backend."""
    from vfiosim import Kernel

    f = tmp_path / "board.toml"
    f.write_text(
        '[machine]\niommu = "fsl_pamu"\n'
        '[[pcie_controller]]\nindex = 0\nliodn = 0x500\n'
        '[[device]]\nname = "0000:01:00.0"\nmodel = "edu"\ngroup = 1\ncontroller = 0\n')
    k = Kernel.from_file(f, clock="manual")
    try:
        p = open_pamu(k, set_iommu=False)
        expect_errno(errno.EINVAL, k.ioctl, p.cfd, V.VFIO_SET_IOMMU, P.VFIO_FSL_PAMU_IOMMU)
        assert k.machine.pamu.spaace_free_count() == k.machine.pamu.spaact_entries
    finally:
        k.shutdown()


def test_release_leaves_liodns_invalid(make_kernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = open_pamu(k)
    free = k.machine.pamu.spaace_free_count()
    pinned = k.machine.bus.pinned_bytes()
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    b = Buffer(2 * MiB)
    p.map_dma(b.addr, 0, 2 * MiB)
    assert k.machine.locked_vm[k.process.pid] == 2 * MiB
    k.close(p.gfds[1])
    f = p.paace(1)
    assert f["v"] == 0 and f["mw"] == 0
    assert k.machine.pamu.spaace_free_count() == free
    assert k.machine.bus.pinned_bytes() == pinned
    assert k.process.pid not in k.machine.locked_vm
    b.close()


# ---------------------------------------------------------------------------------------------
# sdk_swallow_errors (§6.7.2)


def test_swallow_set_attr_errors(make_kernel) -> None:
    k = make_kernel("p4080", msi_mode="explicit", sdk_swallow_errors=True)
    p = open_pamu(k)
    assert p.set_attr(7) == 0                       # unknown attribute
    assert p.set_windows(16) == 0                   # before GEOMETRY
    assert p.windows() == 256
    assert p.set_geometry(0, 0x2FFF) == 0           # refused geometry
    assert p.geometry() == (0, APERTURE_MAX)        # the domain kept its own
    assert p.backend.aperture_end == 0x2FFF         # quirk: the SDK recorded it anyway
    assert p.set_geometry(0, 32 * MiB - 1) == 0
    assert p.set_windows(0) == 0 and p.set_windows(3) == 0
    assert p.windows() == 256
    assert p.set_attr(P.VFIO_ATTR_WINDOWS, flags=1, windows=16) == 0
    assert p.windows() == 256
    assert p.set_stash(0, 9) == 0
    # argsz < minsz still fails, as in the SDK
    expect_errno(errno.EINVAL, p.set_attr, P.VFIO_ATTR_WINDOWS, argsz=31, windows=16)
    # GET_ATTR is not covered by the option [proposed, Appendix A #32]
    a = make_attr(P.VFIO_ATTR_WINDOWS, flags=1)
    expect_errno(errno.EINVAL, p.ioctl, P.VFIO_IOMMU_PAMU_GET_ATTR, a)


def test_swallow_ignored_in_auto_mode(make_kernel) -> None:
    p = open_pamu(make_kernel("p4080", msi_mode="auto", sdk_swallow_errors=True))
    expect_errno(errno.EINVAL, p.set_windows, 16)
