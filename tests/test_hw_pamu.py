"""PAMU hardware model: PAACE encodings, SPAACT pool, translation and access violations.

SPEC §7.  Entry words are checked against encodings computed by hand from fsl_pamu.h.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfiosim.hw import pamu as P
from vfiosim.hw.iommu import IommuFault
from vfiosim.hw.pamu import (
    AV_LIODN_INVALID,
    AV_LIODN_NOT_IN_PPAACT,
    AV_OUTSIDE_APERTURE,
    AV_OUTSIDE_MAPPING,
    AV_PERMISSION,
    AV_WINDOW_INVALID,
    PAACE_AP_PERMS_ALL,
    PAACE_AP_PERMS_DENIED,
    PAACE_AP_PERMS_QUERY,
    PAACE_AP_PERMS_UPDATE,
    PAMU_NOT_DEFINED,
    ULONG_MAX,
    Pamu,
)

N = PAMU_NOT_DEFINED
L = 0x0C0  # p4080 preset: PCIe controller 0
MiB = 1 << 20
BANK0_MSIIR = 0xF_FE04_4140


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000

    def now_ns(self) -> int:
        return self.t


def new_pamu(**kw: object) -> Pamu:
    kw.setdefault("liodns", [0x0C0, 0x0C1, 0x0C2])
    kw.setdefault("clock", FakeClock())
    return Pamu(**kw)  # type: ignore[arg-type]


def set_windows(p: Pamu, liodn: int, start: int, size: int, count: int) -> None:
    """What fsl_pamu_domain.c's pamu_set_liodn() does for WINDOWS = count."""
    assert p.pamu_disable_liodn(liodn) == 0
    assert p.pamu_config_ppaace(liodn, start, size, N, 0, N, N, count if count > 1 else 0,
                                0) == 0
    if count > 1:
        for i in range(count):
            assert p.pamu_disable_spaace(liodn, i) == 0
            assert p.pamu_config_spaace(liodn, count, i, size // count, N, 0, N, N, 0, 0) == 0


def enable_window(p: Pamu, liodn: int, count: int, k: int, paddr: int, size: int,
                  ap: int) -> None:
    """fsl_pamu_window_enable() → update_liodn() for a multi-window domain."""
    assert p.pamu_config_spaace(liodn, count, k, size, N, paddr >> 12, N, N, 1 if k else 0,
                                ap) == 0


def words(p: Pamu, liodn: int) -> tuple[int, ...]:
    e = p.pamu_get_ppaace(liodn)
    assert e is not None
    return e.words()


def fault(p: Pamu, liodn: int, iova: int, size: int, write: bool) -> IommuFault:
    with pytest.raises(IommuFault) as ei:
        p.translate(liodn, iova, size, write)
    return ei.value


# --------------------------------------------------------------------------------------------
# Field definitions and encodings


def test_every_mask_matches_its_shift() -> None:
    names = [n for n in dir(P) if n.endswith("_SHIFT") and hasattr(P, n[: -len("_SHIFT")])]
    assert len(names) >= 20
    for n in names:
        mask = getattr(P, n[: -len("_SHIFT")])
        if callable(mask):
            continue
        assert P._shift_of(mask) == getattr(P, n), n


def test_set_bf_get_bf() -> None:
    v = P.set_bf(0xFFFFFFFF, P.PPAACE_AF_WSE, 0xB)
    assert v == 0xFFFFF2FF
    assert P.get_bf(v, P.PPAACE_AF_WSE) == 0xB
    # a value wider than the field is truncated to the mask, as in the C macro
    assert P.set_bf(0, P.PAACE_AF_AP, 0x7) == 0x18
    assert P.set_bf(0, P.PAACE_IA_CID, 0x1FF) == 0x00FF0000


@pytest.mark.parametrize(
    ("size", "wse"),
    [(4096, 0xB), (8192, 0xC), (32 * MiB, 0x18), (1 << 32, 0x1F), (1 << 36, 35)],
)
def test_wse_encoding(size: int, wse: int) -> None:
    assert P.map_addrspace_size_to_wse(size) == wse
    assert P.wse_to_size(wse) == size


def test_wse_constants_match_sizes() -> None:
    for i, name in enumerate(["4K", "8K", "16K", "32K", "64K", "128K", "256K", "512K", "1M",
                              "2M", "4M", "8M", "16M", "32M", "64M", "128M", "256M", "512M",
                              "1G", "2G", "4G"]):
        assert P.map_addrspace_size_to_wse(4096 << i) == getattr(P, f"PAACE_WSE_{name}")


def test_wse_of_non_power_of_two_is_a_bug() -> None:
    with pytest.raises(ValueError):
        P.map_addrspace_size_to_wse(3 * 4096)


@pytest.mark.parametrize(("count", "wce"), [(2, 0), (4, 1), (16, 3), (256, 7)])
def test_wce_encoding(count: int, wce: int) -> None:
    assert P.map_subwindow_cnt_to_wce(count) == wce


def test_prot_to_ap() -> None:
    assert [P.prot_to_ap(x) for x in range(4)] == [
        PAACE_AP_PERMS_DENIED, PAACE_AP_PERMS_QUERY, PAACE_AP_PERMS_UPDATE, PAACE_AP_PERMS_ALL]


def test_max_subwindows_from_pc3() -> None:
    p = new_pamu()
    assert p.pamu_get_max_subwin_cnt() == 256
    assert P.PAMU_PC3_MWCE(p.mmio_read(P.PAMU_PC3, 4)) == 7
    assert new_pamu(max_subwindows=16).max_subwindows == 16  # p4080 rev 1: MWCE 3


# --------------------------------------------------------------------------------------------
# Boot state and primary entries


def test_boot_identity_entry() -> None:
    p = new_pamu()
    wbah, af, da, ia, twbah, wb, fspi, op = words(p, L)
    # WSE 35 [11:6] = 0x8C0, AP all [4:3] = 0x18, PT primary, V = 1
    assert (wbah, af, da, ia, twbah, wb, fspi, op) == (0, 0x8D9, 0x80, 0, 0, 0, 0, 0)
    assert p.translate(L, 0x1234_5678, 16, True) == [(0x1234_5678, 16)]
    assert p.translate(L, (1 << 36) - 8, 8, False) == [((1 << 36) - 8, 8)]
    assert fault(p, L, 1 << 36, 4, False).reason == AV_OUTSIDE_APERTURE


def test_liodn_not_in_device_tree_is_invalid_at_boot() -> None:
    p = new_pamu()
    assert words(p, 0x10) == (0,) * 8
    assert fault(p, 0x10, 0, 4, False).reason == AV_LIODN_INVALID
    assert p.pamu_enable_liodn(0x10) == -errno.EINVAL  # "liodn not configured" (WSE 0)


def test_reset_restores_boot_state() -> None:
    p = new_pamu()
    set_windows(p, L, 0, 32 * MiB, 16)
    fault(p, L, 1 << 30, 4, True)
    p.reset()
    assert words(p, L)[1] == 0x8D9
    assert p.spaace_free_count() == 2048
    assert p.violations == [] and p.av_status == {}


def test_single_4k_window_words() -> None:
    p = new_pamu()
    assert p.pamu_disable_liodn(L) == 0
    assert p.pamu_config_ppaace(L, 0x10000, 4096, N, 0x12345, N, N, 0, PAACE_AP_PERMS_ALL) == 0
    wbah, af, da, ia, twbah, wb, fspi, op = words(p, L)
    assert wbah == 0
    # WBAL 0x10 [31:12] | WSE 0xB [11:6] | AP 3 [4:3] | V 0 (disabled first)
    assert af == 0x0001_0000 | 0x2C0 | 0x18
    assert ia == 0x4  # ATM window translation, WCE 0
    assert twbah == 0 and wb == 0x1234_5000
    assert p.pamu_enable_liodn(L) == 0
    assert words(p, L)[1] == af | 1
    assert p.translate(L, 0x10ABC, 4, True) == [(0x1234_5ABC, 4)]
    assert fault(p, L, 0x11000, 4, True).reason == AV_OUTSIDE_APERTURE


def test_high_window_address_and_rpn() -> None:
    p = new_pamu()
    rpn = 0xF_FE04_4000 >> 12  # 0xFFE044
    assert p.pamu_config_ppaace(L, 0xF_0000_0000, 1 << 32, N, rpn, N, N, 0, 3) == 0
    wbah, af, _, _, twbah, wb, _, _ = words(p, L)
    assert wbah == 0xF and af & P.PPAACE_AF_WBAL == 0
    assert P.get_bf(af, P.PPAACE_AF_WSE) == 0x1F
    assert twbah == 0xF and wb == 0xFE04_4000
    assert p.translate(L, 0xF_0000_0140, 4, True) == [(0xF_FE04_4140, 4)]


def test_config_ppaace_errors_in_kernel_order() -> None:
    p = new_pamu()
    assert p.pamu_config_ppaace(L, 0, 3 * 4096, N, 0, N, N, 0, 3) == -errno.EINVAL
    assert p.pamu_config_ppaace(L, 0, 2048, N, 0, N, N, 0, 3) == -errno.EINVAL
    assert p.pamu_config_ppaace(L, 0x1000, 0x2000, N, 0, N, N, 0, 3) == -errno.EINVAL
    # size checks come before the LIODN lookup
    assert p.pamu_config_ppaace(0x500, 0x1000, 0x2000, N, 0, N, N, 0, 3) == -errno.EINVAL
    assert p.pamu_config_ppaace(0x500, 0, 0x2000, N, 0, N, N, 0, 3) == -errno.ENOENT
    assert p.pamu_config_ppaace(L, 0, 0x2000, 16, 0, N, N, 0, 3) == -errno.EINVAL
    # one window needs subwin_cnt 0 (fsl_pamu_domain.c passes "w_count > 1 ? w_count : 0");
    # 1 asks the SPAACE pool for nothing and fails like gen_pool_alloc(0)
    assert p.pamu_config_ppaace(L, 0, 0x2000, N, 0, N, N, 1, 3) == -errno.EINVAL


def test_omi_snoop_and_stash_fields() -> None:
    p = new_pamu()
    assert p.pamu_config_ppaace(L, 0, 0x2000, 5, 0, 0x21, 0x26, 0, 3) == 0
    _, _, da, ia, _, _, _, op = words(p, L)
    assert op == 5
    assert P.get_bf(ia, P.PAACE_IA_OTM) == P.PAACE_OTM_INDEXED
    assert P.get_bf(ia, P.PAACE_IA_CID) == 0x26
    assert da == 0x2180  # snpid byte 0x21, coherency required
    f = p.paace_fields(L)
    assert (f["omi"], f["cid"], f["snpid"], f["coherency_required"]) == (5, 0x26, 0x21, 1)


def test_enable_disable_liodn() -> None:
    p = new_pamu()
    assert p.pamu_disable_liodn(L) == 0
    assert fault(p, L, 0, 4, False).reason == AV_LIODN_INVALID
    assert p.pamu_enable_liodn(L) == 0
    assert p.translate(L, 0, 4, False) == [(0, 4)]
    assert p.pamu_enable_liodn(0x500) == -errno.ENOENT
    assert p.pamu_disable_liodn(0x500) == -errno.ENOENT
    assert p.pamu_get_ppaace(0x500) is None


# --------------------------------------------------------------------------------------------
# Multi-window entries: the SPEC §7.3 example


def test_spec_7_3_example_words() -> None:
    p = new_pamu()
    set_windows(p, 0x0C1, 0, 1 << 20, 4)  # takes SPAACEs 0-2, so f = 3 below
    set_windows(p, L, 0, 32 * MiB, 16)
    f = p.paace_fields(L)["fspi"]
    assert f == 3
    ram = 0x2000_0000
    enable_window(p, L, 16, 0, ram, 2 * MiB, PAACE_AP_PERMS_ALL)
    enable_window(p, L, 16, 15, BANK0_MSIIR & ~0xFFF, 4096, PAACE_AP_PERMS_UPDATE)
    assert p.pamu_enable_liodn(L) == 0

    wbah, af, da, ia, twbah, wb, fspi, op = words(p, L)
    assert wbah == 0
    # WBAL 0 | WSE 24 (0x600) | MW (0x20) | AP 3 (window 0) | PT 0 | V 1
    assert af == 0x600 | 0x20 | 0x18 | 0x1
    assert ia == (3 << 4) | (1 << 2)  # WCE 3, ATM window translation
    assert da == 0x80
    assert (twbah, wb) == (0, 0x2000_0000 | (P.PAACE_WSE_2M << 6))
    assert fspi == 3

    sp = p.pamu_get_spaace(p.pamu_get_ppaace(L), 14)  # window 15 = SPAACE f + 14
    assert sp is not None and sp.index == f + 14
    s_wbah, s_af, s_da, s_ia, s_twbah, s_wb, s_fspi, s_op = sp.words()
    assert s_twbah == 0xF
    assert s_wb == (0xFE044 << 12) | (11 << 6)  # TWBAL 0xFE044, SWSE 11 (4 KiB)
    # LIODN [31:16] | AP 2 [4:3] | PT secondary [1] | V [0]
    assert s_af == (L << 16) | 0x10 | 0x2 | 0x1
    assert s_da == 0x80
    assert s_ia == 1 << 2
    d = p.dump(L)
    w14 = d["spaaces"][13]
    assert w14["window"] == 14 and w14["v"] == 0
    w15 = d["spaaces"][14]
    assert (w15["window"], w15["index"], w15["twbah"], w15["twbal"], w15["swse"], w15["ap"],
            w15["v"]) == (15, f + 14, 0xF, 0xFE044, 11, 2, 1)
    assert len(d["spaaces"]) == 15

    # bank 0's MSIIR through window 15; RAM through window 0
    assert p.translate(L, 15 * 2 * MiB + 0x140, 4, True) == [(BANK0_MSIIR, 4)]
    assert p.translate(L, 0x1000, 64, False) == [(ram + 0x1000, 64)]


def test_set_windows_leaves_every_window_disabled() -> None:
    p = new_pamu()
    set_windows(p, L, 0, 32 * MiB, 16)
    assert p.pamu_enable_liodn(L) == 0
    f = p.dump(L)
    assert f["ppaace"]["ap"] == PAACE_AP_PERMS_DENIED
    assert f["ppaace"]["swse"] == P.PAACE_WSE_2M
    assert all(s["v"] == 0 and s["swse"] == P.PAACE_WSE_2M and s["pt"] == 1
               and s["liodn"] == L for s in f["spaaces"])
    for k in (0, 1, 15):
        assert fault(p, L, k * 2 * MiB, 4, False).reason == AV_WINDOW_INVALID
        assert p.pamu_enable_liodn(L) == 0


def test_config_spaace_errors() -> None:
    p = new_pamu()
    set_windows(p, L, 0, 32 * MiB, 16)
    assert p.pamu_config_spaace(L, 0, 1, 4096, N, 0, N, N, 1, 3) == -errno.EINVAL
    assert p.pamu_config_spaace(0x500, 16, 1, 4096, N, 0, N, N, 1, 3) == -errno.ENOENT
    assert p.pamu_config_spaace(L, 16, 1, 2048, N, 0, N, N, 1, 3) == -errno.EINVAL
    assert p.pamu_config_spaace(L, 16, 1, 3 * 4096, N, 0, N, N, 1, 3) == -errno.EINVAL
    assert p.pamu_config_spaace(L, 16, 1, 4096, N, ULONG_MAX, N, N, 1, 3) == -errno.EINVAL
    assert p.pamu_config_spaace(L, 16, 1, 4096, 99, 0, N, N, 1, 3) == -errno.EINVAL


def test_config_spaace_subwin_past_count_programs_the_primary() -> None:
    # quirk of fsl_pamu.c: with subwin >= subwin_cnt, paace still points at the primary
    p = new_pamu()
    set_windows(p, L, 0, 32 * MiB, 16)
    assert p.pamu_config_spaace(L, 16, 16, 4096, N, 0x777, N, N, 0, 3) == 0
    f = p.paace_fields(L)
    assert (f["rpn"], f["swse"], f["ap"]) == (0x777, 0xB, 3)


def test_disable_spaace() -> None:
    p = new_pamu()
    set_windows(p, L, 0, 32 * MiB, 16)
    enable_window(p, L, 16, 0, 0x100000, 4096, 3)
    enable_window(p, L, 16, 3, 0x200000, 4096, 3)
    assert p.pamu_enable_liodn(L) == 0
    assert p.translate(L, 3 * 2 * MiB, 4, False) == [(0x200000, 4)]
    assert p.pamu_disable_spaace(L, 3) == 0
    assert p.dump(L)["spaaces"][2]["v"] == 0
    assert p.pamu_disable_spaace(L, 0) == 0
    assert p.paace_fields(L)["ap"] == PAACE_AP_PERMS_DENIED
    # quirk: pamu_get_spaace() bounds wnum by the window count, not count - 1, so subwin 16
    # of 16 reaches the SPAACE just past the LIODN's block; 17 is the first refused
    assert p.pamu_disable_spaace(L, 17) == -errno.ENOENT
    assert p.pamu_disable_spaace(0x500, 0) == -errno.ENOENT


def test_update_paace_stash() -> None:
    p = new_pamu()
    set_windows(p, L, 0, 32 * MiB, 16)
    for i in range(16):
        assert p.pamu_update_paace_stash(L, i, 0x27) == 0
    d = p.dump(L)
    assert d["ppaace"]["cid"] == 0x27
    assert all(s["cid"] == 0x27 for s in d["spaaces"])
    assert p.pamu_update_paace_stash(L, 17, 1) == -errno.ENOENT
    assert p.pamu_update_paace_stash(0x500, 0, 1) == -errno.ENOENT


# --------------------------------------------------------------------------------------------
# SPAACE pool


def test_spaact_exhaustion() -> None:
    p = new_pamu(liodns=[])
    for i in range(8):  # 8 × 255 = 2040 of 2048 entries
        assert p.pamu_config_ppaace(i, 0, 1 << 30, N, 0, N, N, 256, 0) == 0
        assert p.paace_fields(i)["fspi"] == 255 * i
    assert p.spaace_free_count() == 8
    assert p.pamu_config_ppaace(8, 0, 1 << 30, N, 0, N, N, 16, 0) == -errno.EINVAL
    assert p.pamu_get_fspi_and_allocate(9) == ULONG_MAX
    assert p.pamu_get_fspi_and_allocate(8) == 2040
    assert p.pamu_get_fspi_and_allocate(1) == ULONG_MAX


def test_free_and_reuse_of_spaace_blocks() -> None:
    p = new_pamu(liodns=[])
    for i in range(3):
        assert p.pamu_config_ppaace(i, 0, 1 << 30, N, 0, N, N, 16, 0) == 0
    assert p.spaace_blocks() == {0: 15, 15: 15, 30: 15}
    p.pamu_free_subwins(1)
    assert p.paace_fields(1)["mw"] == 0
    assert p.spaace_blocks() == {0: 15, 30: 15}
    # first fit: a block that fits the hole reuses it, a larger one goes after the others
    assert p.pamu_config_ppaace(3, 0, 1 << 30, N, 0, N, N, 32, 0) == 0
    assert p.paace_fields(3)["fspi"] == 45
    assert p.pamu_config_ppaace(4, 0, 1 << 30, N, 0, N, N, 16, 0) == 0
    assert p.paace_fields(4)["fspi"] == 15
    # freeing twice does nothing more: MW is already clear
    p.pamu_free_subwins(1)
    p.pamu_free_subwins(1)
    assert p.spaace_free_count() == 2048 - 15 * 3 - 31


def test_contiguous_blocks_only() -> None:
    p = new_pamu(liodns=[])
    blocks = [p.pamu_get_fspi_and_allocate(512) for _ in range(4)]
    assert blocks == [0, 512, 1024, 1536]
    p._gen_pool_free(0, 512)
    p._gen_pool_free(1024, 512)
    assert p.spaace_free_count() == 1024
    assert p.pamu_get_fspi_and_allocate(513) == ULONG_MAX
    assert p.pamu_get_fspi_and_allocate(512) == 0


def test_get_spaace_bounds() -> None:
    p = new_pamu()
    set_windows(p, L, 0, 32 * MiB, 16)
    e = p.pamu_get_ppaace(L)
    assert e is not None
    assert p.pamu_get_spaace(e, 15) is not None  # WCE allows 16 indexes, as in the kernel
    assert p.pamu_get_spaace(e, 16) is None


# --------------------------------------------------------------------------------------------
# Stash ids


def test_stash_ids_p4080() -> None:
    p = new_pamu(cpu_model="e500mc", num_cpus=8)
    assert p.get_stash_id(P.PAMU_ATTR_CACHE_L1, 3) == 38
    assert p.get_stash_id(P.PAMU_ATTR_CACHE_L2, 3) == 39
    assert p.get_stash_id(P.PAMU_ATTR_CACHE_L3, 3) == 1
    assert p.get_stash_id(P.PAMU_ATTR_CACHE_L3, 99) == 1  # L3 never looks at the cpu
    assert p.get_stash_id(P.PAMU_ATTR_CACHE_L1, 8) == N
    assert p.get_stash_id(4, 0) == N


def test_stash_ids_t4240_and_erratum() -> None:
    p = new_pamu(cpu_model="e6500", num_cpus=24)
    assert p.get_stash_id(P.PAMU_ATTR_CACHE_L1, 4) == 40  # thread 4 = core 2
    assert p.get_stash_id(P.PAMU_ATTR_CACHE_L1, 5) == 40
    assert p.get_stash_id(P.PAMU_ATTR_CACHE_L2, 7) == 33  # cluster 0
    assert p.get_stash_id(P.PAMU_ATTR_CACHE_L2, 9) == 35  # cluster 1
    assert p.get_stash_id(P.PAMU_ATTR_CACHE_L2, 23) == 37
    assert p.get_stash_id(P.PAMU_ATTR_CACHE_L1, 24) == N
    e = new_pamu(cpu_model="e6500", num_cpus=24, l1_stash_as_l2=True)
    assert e.get_stash_id(P.PAMU_ATTR_CACHE_L1, 9) == 35
    assert e.get_stash_id(P.PAMU_ATTR_CACHE_L2, 9) == 35


# --------------------------------------------------------------------------------------------
# Translation failures (SPEC §7.4) and access-violation handling


@pytest.fixture
def mapped() -> Pamu:
    """16 × 2 MiB windows at 0: window 0 RAM (RW), 1 RAM read-only, 2 write-only, 15 bank 0."""
    p = new_pamu()
    set_windows(p, L, 0, 32 * MiB, 16)
    enable_window(p, L, 16, 0, 0x4000_0000, 2 * MiB, PAACE_AP_PERMS_ALL)
    enable_window(p, L, 16, 1, 0x5000_0000, 2 * MiB, PAACE_AP_PERMS_QUERY)
    enable_window(p, L, 16, 2, 0x6000_0000, 1 * MiB, PAACE_AP_PERMS_UPDATE)
    enable_window(p, L, 16, 15, BANK0_MSIIR & ~0xFFF, 4096, PAACE_AP_PERMS_UPDATE)
    assert p.pamu_enable_liodn(L) == 0
    return p


def test_translate_happy_paths(mapped: Pamu) -> None:
    p = mapped
    assert p.translate(L, 0x10, 0x100, True) == [(0x4000_0010, 0x100)]
    assert p.translate(L, 2 * MiB + 8, 8, False) == [(0x5000_0008, 8)]
    assert p.translate(L, 4 * MiB + 0xFFFF8, 8, True) == [(0x600F_FFF8, 8)]
    assert p.translate(L, 30 * MiB + 0x140, 4, True) == [(BANK0_MSIIR, 4)]
    assert p.translate(L, 0, 0, True) == []
    assert p.violations == []


@pytest.mark.parametrize(
    ("liodn", "iova", "size", "write", "reason"),
    [
        (0x500, 0, 4, False, AV_LIODN_NOT_IN_PPAACT),
        (L, 32 * MiB, 4, False, AV_OUTSIDE_APERTURE),  # rule 2: past the aperture
        (L, 3 * 2 * MiB, 4, True, AV_WINDOW_INVALID),  # rule 3: SPAACE V = 0
        (L, 30 * MiB + 0x1000, 4, True, AV_OUTSIDE_MAPPING),  # rule 4: 4 KiB bank in 2 MiB
        (L, 4 * MiB + 1 * MiB, 4, True, AV_OUTSIDE_MAPPING),  # 1 MiB mapped in window 2
        (L, 30 * MiB + 0xFFE, 4, True, AV_OUTSIDE_MAPPING),  # straddles the mapped end
        (L, 2 * MiB, 4, True, AV_PERMISSION),  # rule 5: write to a read-only window
        (L, 4 * MiB, 4, False, AV_PERMISSION),  # read of a write-only window
        (L, 30 * MiB + 0x140, 4, False, AV_PERMISSION),  # read of the bank
    ],
)
def test_translate_failure_reasons(
    mapped: Pamu, liodn: int, iova: int, size: int, write: bool, reason: str
) -> None:
    e = fault(mapped, liodn, iova, size, write)
    assert e.reason == reason
    v = e.violation  # type: ignore[attr-defined]
    assert (v.liodn, v.iova, v.length, v.direction, v.reason, v.time_ns) == (
        liodn, iova, size, "write" if write else "read", reason, 1000)
    assert mapped.violations == [v]


def test_rule_1_disabled_liodn(mapped: Pamu) -> None:
    assert mapped.pamu_disable_liodn(L) == 0
    # an MSI write through a disabled domain faults too (SPEC §7.4 rule 1)
    assert fault(mapped, L, 30 * MiB + 0x140, 4, True).reason == AV_LIODN_INVALID


def test_rule_3_window_0_denied(mapped: Pamu) -> None:
    assert mapped.pamu_disable_spaace(L, 0) == 0
    assert fault(mapped, L, 0x100, 4, False).reason == AV_WINDOW_INVALID


def test_rule_2_below_the_aperture() -> None:
    p = new_pamu()
    set_windows(p, L, 64 * MiB, 32 * MiB, 16)
    enable_window(p, L, 16, 0, 0x100000, 2 * MiB, 3)
    assert p.pamu_enable_liodn(L) == 0
    assert p.translate(L, 64 * MiB, 4, False) == [(0x100000, 4)]
    assert fault(p, L, 64 * MiB - 4, 4, False).reason == AV_OUTSIDE_APERTURE


def test_av_disables_the_liodn(mapped: Pamu) -> None:
    p = mapped
    fault(p, L, 3 * 2 * MiB, 4, True)
    assert p.paace_fields(L)["v"] == 0
    assert p.av_status[L].disabled_by_av and p.av_status[L].count == 1
    # every later transaction faults (MSIs included), and each is recorded
    assert fault(p, L, 30 * MiB + 0x140, 4, True).reason == AV_LIODN_INVALID
    assert p.av_status[L].count == 2 and len(p.violations) == 2
    # the next domain enable makes the LIODN valid again
    assert p.pamu_enable_liodn(L) == 0
    assert not p.av_status[L].disabled_by_av
    assert p.translate(L, 30 * MiB + 0x140, 4, True) == [(BANK0_MSIIR, 4)]


def test_av_without_disabling() -> None:
    p = new_pamu(av_disables_liodn=False)
    set_windows(p, L, 0, 32 * MiB, 16)
    enable_window(p, L, 16, 0, 0x4000_0000, 2 * MiB, 3)
    assert p.pamu_enable_liodn(L) == 0
    fault(p, L, 2 * MiB, 4, True)
    assert p.paace_fields(L)["v"] == 1
    assert p.av_status[L].count == 1 and not p.av_status[L].disabled_by_av
    assert p.translate(L, 0, 4, True) == [(0x4000_0000, 4)]


def test_av_registers_latch_first_violation(mapped: Pamu) -> None:
    p = mapped
    fault(p, L, 3 * 2 * MiB + 0x10, 4, True)
    fault(p, 0x0C1, 1 << 37, 4, True)
    avs1 = p.mmio_read(P.PAMU_AVS1, 4)
    assert avs1 >> P.PAMU_AVS1_LIODN_SHIFT == L
    assert avs1 & P.PAMU_AVS1_AV and avs1 & P.PAMU_AVS1_WAV
    assert p.mmio_read(P.PAMU_AVAL, 4) == 3 * 2 * MiB + 0x10
    assert p.mmio_read(P.PAMU_AVAH, 4) == 0
    assert p.mmio_read(P.PAMU_PICS, 4) & P.PAMU_ACCESS_VIOLATION_STAT
    # the AV handler clears the condition by writing AVS1 back
    p.mmio_write(P.PAMU_AVS1, 4, avs1 & P.PAMU_AV_MASK)
    assert p.mmio_read(P.PAMU_AVS1, 4) == 0
    fault(p, 0x500, 0, 4, False)
    avs1 = p.mmio_read(P.PAMU_AVS1, 4)
    assert avs1 & P.PAMU_AVS1_LAV == P.PAMU_LAV_LIODN_NOT_IN_PPAACT
    p.mmio_write(P.PAMU_PICS, 4, P.PAMU_ACCESS_VIOLATION_STAT | P.PAMU_ACCESS_VIOLATION_ENABLE)
    assert p.mmio_read(P.PAMU_PICS, 4) == P.PAMU_ACCESS_VIOLATION_ENABLE


# --------------------------------------------------------------------------------------------
# Transactions that cross windows


def test_crossing_windows_is_split(mapped: Pamu) -> None:
    p = mapped
    parts = p.translate(L, 2 * MiB - 8, 16, False)
    assert parts == [(0x4000_0000 + 2 * MiB - 8, 8), (0x5000_0000, 8)]


def test_crossing_into_a_bad_window_fails_whole(mapped: Pamu) -> None:
    p = mapped
    e = fault(p, L, 2 * MiB - 8, 16, True)  # window 1 is read-only
    assert e.reason == AV_PERMISSION
    v = e.violation  # type: ignore[attr-defined]
    assert (v.iova, v.length, v.address) == (2 * MiB - 8, 16, 2 * MiB)
    assert p.paace_fields(L)["v"] == 0


def test_crossing_out_of_the_aperture_fails() -> None:
    p = new_pamu()
    assert p.pamu_config_ppaace(L, 0, 0x2000, N, 0x100, N, N, 0, 3) == 0
    assert p.pamu_enable_liodn(L) == 0
    assert fault(p, L, 0x1FFC, 8, False).reason == AV_OUTSIDE_APERTURE


# --------------------------------------------------------------------------------------------
# Property: translation agrees with the window arithmetic


@st.composite
def geometries(draw: st.DrawFn) -> dict:
    ap_shift = draw(st.integers(min_value=12, max_value=36))
    start = draw(st.integers(min_value=0, max_value=(1 << (36 - ap_shift)) - 1)) << ap_shift
    cnt_shift = draw(st.integers(min_value=0, max_value=min(8, ap_shift - 12)))
    count = 1 << cnt_shift
    sub_shift = ap_shift - cnt_shift
    windows: dict[int, tuple[int, int, int]] = {}
    for k in draw(st.sets(st.integers(min_value=0, max_value=count - 1), max_size=8)):
        size_shift = sub_shift if count == 1 else draw(
            st.integers(min_value=12, max_value=sub_shift))
        paddr = draw(st.integers(min_value=0, max_value=(1 << (36 - size_shift)) - 1)) \
            << size_shift
        ap = draw(st.integers(min_value=0 if count > 1 else 1, max_value=3))
        windows[k] = (paddr, 1 << size_shift, ap)
    return {"start": start, "size": 1 << ap_shift, "count": count, "windows": windows}


def expected(g: dict, iova: int, size: int, write: bool) -> list[tuple[int, int]] | str:
    sub = g["size"] // g["count"]
    parts = []
    cur, end = iova, iova + size
    while cur < end:
        if not g["start"] <= cur < g["start"] + g["size"]:
            return AV_OUTSIDE_APERTURE
        k = (cur - g["start"]) // sub
        wstart = g["start"] + k * sub
        part_end = min(end, wstart + sub)
        w = g["windows"].get(k)
        if w is None or (k == 0 and g["count"] > 1 and w[2] == 0):
            return AV_WINDOW_INVALID
        paddr, msize, ap = w
        if part_end - wstart > msize:
            return AV_OUTSIDE_MAPPING
        if not ap & (2 if write else 1):
            return AV_PERMISSION
        parts.append((paddr + cur - wstart, part_end - cur))
        cur = part_end
    return parts


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=geometries(), data=st.data())
def test_translation_matches_window_arithmetic(g: dict, data: st.DataObject) -> None:
    p = new_pamu(av_disables_liodn=False)
    count = g["count"]
    if count == 1:
        # a single window: map_win() programs the primary with the mapped size
        if g["windows"]:
            paddr, msize, ap = g["windows"][0]
            assert p.pamu_disable_liodn(L) == 0
            assert p.pamu_config_ppaace(L, g["start"], g["size"], N, paddr >> 12, N, N, 0,
                                        ap) == 0
        else:
            set_windows(p, L, g["start"], g["size"], 1)
            assert p.pamu_disable_spaace(L, 0) == 0
    else:
        set_windows(p, L, g["start"], g["size"], count)
        for k, (paddr, msize, ap) in g["windows"].items():
            enable_window(p, L, count, k, paddr, msize, ap)
    assert p.pamu_enable_liodn(L) == 0

    sub = g["size"] // count
    for _ in range(8):
        if g["windows"] and data.draw(st.booleans()):
            k = data.draw(st.sampled_from(sorted(g["windows"])))
            base = g["start"] + k * sub
            iova = base + data.draw(st.integers(min_value=0, max_value=g["windows"][k][1]))
        else:
            iova = data.draw(st.integers(min_value=max(0, g["start"] - sub),
                                         max_value=g["start"] + g["size"] + sub))
        size = data.draw(st.integers(min_value=1, max_value=min(sub, 1 << 16) + 8))
        write = data.draw(st.booleans())
        want = expected(g, iova, size, write)
        if isinstance(want, str):
            assert fault(p, L, iova, size, write).reason == want
        else:
            assert p.translate(L, iova, size, write) == want
            assert sum(n for _, n in want) == size


@settings(max_examples=100, deadline=None)
@given(ap_shift=st.integers(min_value=12, max_value=36), cnt_shift=st.integers(0, 8),
       data=st.data())
def test_window_index_round_trip(ap_shift: int, cnt_shift: int, data: st.DataObject) -> None:
    cnt_shift = min(cnt_shift, ap_shift - 12)
    wse = P.map_addrspace_size_to_wse(1 << ap_shift)
    sub_size = (1 << ap_shift) >> cnt_shift
    assert P.wse_to_size(wse) == 1 << ap_shift
    if cnt_shift:
        wce = P.map_subwindow_cnt_to_wce(1 << cnt_shift)
        assert P.wse_to_size(wse) >> (wce + 1) == sub_size
    k = data.draw(st.integers(0, (1 << cnt_shift) - 1))
    off = data.draw(st.integers(0, sub_size - 1))
    assert (k * sub_size + off) // sub_size == k
