"""VFIO_IOMMU_GET_INFO on Type1 and the capability chain builder (SPEC §5.4, §2.7 #11-12,
§13.1, §13.3)."""

from __future__ import annotations

import errno
import struct

import pytest
from type1_helpers import PAGE, Buf, dma_map, errno_of, get_info, kernel, type1_container

from vfiosim.kernel.caps import (
    VfioInfoCap,
    build_chain,
    fixed_part_size,
    place_caps,
    walk_chain,
)
from vfiosim.kernel.profile import KernelProfile
from vfiosim.uapi.vfio import VFIO_IOMMU_GET_INFO

PGSIZES = 0x4020_1000
INFO_FLAGS = 1 | 2  # VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS
RANGES = [(0, 0xFEDF_FFFF), (0xFEF0_0000, (1 << 48) - 1)]


def expected_chain(aligned: bool, avail: int) -> bytes:
    """The x86 chain written by hand from SPEC §3.4 / §5.4 (independent of kernel/caps.py)."""
    mig_at, avail_at = 24, 56
    iova_at = 72 if aligned else 68
    mig = struct.pack("<HHIIIQQ", 2, 1, avail_at, 0, 0, 0x1000, 0x1000_0000)
    dma_avail = struct.pack("<HHII", 3, 1, iova_at, avail) + (b"\0" * 4 if aligned else b"")
    iova = struct.pack("<HHIII", 1, 1, 0, len(RANGES), 0)
    iova += b"".join(struct.pack("<QQ", lo, hi) for lo, hi in RANGES)
    assert mig_at + len(mig) == avail_at and avail_at + len(dma_avail) == iova_at
    return mig + dma_avail + iova


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("kver", ["6.18", "6.6", "6.1", "5.10"])
def test_argsz_sweep_with_poisoned_tail(version, kver):
    aligned = kver in ("6.18", "6.6")
    with kernel(kernel=kver) as k:
        fd = type1_container(k, version)
        b = Buf(PAGE)
        try:
            dma_map(k, fd, b.va, 0, PAGE)
            dma_map(k, fd, b.va, 0x10_0000, PAGE)
        finally:
            b.close()
        chain = expected_chain(aligned, 65535 - 2)
        full = 24 + len(chain)
        assert full == (120 if aligned else 116)
        total = full + 64
        for argsz in range(0, full + 9):
            buf = bytearray([0xAA]) * total
            buf[0:4] = argsz.to_bytes(4, "little")
            before = bytes(buf)
            err = errno_of(lambda b_=buf: k.ioctl(fd, VFIO_IOMMU_GET_INFO, b_))
            if argsz < 16:
                assert err == errno.EINVAL, argsz
                assert bytes(buf) == before, "a failed call writes nothing"
                continue
            assert err == 0, argsz
            # never a byte past argsz
            assert buf[argsz:] == before[argsz:], argsz
            out_argsz, flags, pgsizes = struct.unpack_from("<IIQ", buf, 0)
            assert flags == INFO_FLAGS and pgsizes == PGSIZES
            fits = argsz >= full
            assert out_argsz == (argsz if fits else full), argsz
            if aligned:
                written = min(argsz, 24)
            else:
                written = 20 if argsz >= 20 else 16
                # the tail padding is never written by older kernels
                assert buf[20:24] == before[20:24]
            assert buf[written:min(24, argsz)] == before[written:min(24, argsz)]
            if written >= 20:
                cap_offset = struct.unpack_from("<I", buf, 16)[0]
                assert cap_offset == (24 if fits else 0), argsz
            if written == 24:
                assert buf[20:24] == b"\0\0\0\0"  # pad, zeroed
            if fits:
                assert bytes(buf[24:full]) == chain, argsz
                caps = walk_chain(buf, 24, argsz)
                assert [c.id for c in caps] == [2, 3, 1]
                assert [c.offset for c in caps] == [24, 56, 72 if aligned else 68]
            else:
                # no capability written: the bytes after the fixed part are untouched
                assert buf[24:argsz] == before[24:argsz]


def test_dma_avail_and_ranges_follow_the_state():
    with kernel() as k:
        fd = type1_container(k, "v2")
        info = get_info(k, fd, 4096)
        caps = {c.id: c for c in walk_chain(info, 24, 4096)}
        assert struct.unpack_from("<I", caps[3].body)[0] == 65535
        nr, _ = struct.unpack_from("<II", caps[1].body)
        assert nr == 2
        assert [struct.unpack_from("<QQ", caps[1].body, 8 + 16 * i) for i in range(nr)] \
            == RANGES
        b = Buf(4 * PAGE)
        try:
            for i in range(4):
                dma_map(k, fd, b.va + i * PAGE, i * PAGE, PAGE)
        finally:
            b.close()
        info = get_info(k, fd, 4096)
        caps = {c.id: c for c in walk_chain(info, 24, 4096)}
        assert struct.unpack_from("<I", caps[3].body)[0] == 65531


def test_sub_page_sizes_are_hidden():
    """vfio_update_pgsize_bitmap(): an IOMMU page size below PAGE_SIZE is hidden and PAGE_SIZE
    reported instead, so iova_pgsizes, MIGRATION's pgsize and the alignment rule use 4 KiB."""
    with kernel() as k:
        k.machine.iommu_config["pgsizes"] = 0x20_0000 | 0x800 | 0x200
        fd = type1_container(k, "v2")
        info = get_info(k, fd, 4096)
        assert struct.unpack_from("<Q", info, 8)[0] == 0x20_0000 | PAGE
        caps = {c.id: c for c in walk_chain(info, 24, 4096)}
        assert struct.unpack_from("<IIQ", caps[2].body)[2] == PAGE  # MIGRATION pgsize_bitmap
        b = Buf(2 * PAGE)
        try:
            assert errno_of(lambda: dma_map(k, fd, b.va, 0x800, PAGE)) == errno.EINVAL
            assert errno_of(lambda: dma_map(k, fd, b.va, PAGE, PAGE)) == 0
        finally:
            b.close()


def test_trailing_bytes_are_not_read():
    """§3.7 rule 2: bytes 16..argsz are input garbage, never read: the answer is the same."""
    with kernel() as k:
        fd = type1_container(k, "v1")
        a = get_info(k, fd, 200, poison=0x00)
        b = get_info(k, fd, 200, poison=0xFF)
        assert a[:120] == b[:120]  # the fixed part and the chain
        assert a[120:] == bytes(80) and b[120:] == b"\xff" * 80  # the rest is left alone


def test_buffer_shorter_than_argsz_efault():
    """The chain is copied to argsz's room; an in-process buffer shorter than that faults."""
    with kernel() as k:
        fd = type1_container(k, "v2")
        buf = bytearray(64)
        buf[0:4] = (200).to_bytes(4, "little")
        assert errno_of(lambda: k.ioctl(fd, VFIO_IOMMU_GET_INFO, buf)) == errno.EFAULT


# ---------------------------------------------------------------------------------------------
# kernel/caps.py on its own


def test_chain_builder_aligned_and_packed():
    caps = [(7, 1, b"\x01\x02\x03\x04"), (9, 2, b""), (11, 3, b"x" * 9)]
    a = build_chain(caps, aligned=True)
    assert a.size == 16 + 8 + 24
    raw = a.shift(40)
    assert struct.unpack_from("<HHI", raw, 0) == (7, 1, 40 + 16)
    assert raw[8:16] == b"\x01\x02\x03\x04\0\0\0\0"
    assert struct.unpack_from("<HHI", raw, 16) == (9, 2, 40 + 24)
    assert struct.unpack_from("<HHI", raw, 24) == (11, 3, 0)
    assert raw[32:] == b"x" * 9 + b"\0" * 7
    p = build_chain(caps, aligned=False)
    assert p.size == 12 + 8 + 17
    raw = p.shift(24)
    assert struct.unpack_from("<HHI", raw, 0) == (7, 1, 24 + 12)
    assert struct.unpack_from("<HHI", raw, 12) == (9, 2, 24 + 20)
    assert struct.unpack_from("<HHI", raw, 20) == (11, 3, 0)
    parsed = walk_chain(bytes(24) + raw, 24)
    assert [(c.offset, c.id, c.version) for c in parsed] == [(24, 7, 1), (36, 9, 2), (44, 11, 3)]
    assert parsed[0].body == b"\x01\x02\x03\x04"


def test_place_caps_rules():
    chain = build_chain([(1, 1, b"12345678")], aligned=True)
    assert place_caps(chain, 16, 24) == place_caps(chain, 39, 24)
    p = place_caps(chain, 39, 24)
    assert (p.argsz, p.cap_offset, p.data, p.has_caps) == (40, 0, b"", True)
    p = place_caps(chain, 40, 24)
    assert (p.argsz, p.cap_offset, p.has_caps) == (40, 24, True)
    assert p.data == chain.shift(24)
    empty = VfioInfoCap()
    p = place_caps(empty, 16, 24)
    assert (p.argsz, p.cap_offset, p.data, p.has_caps) == (16, 0, b"", False)


def test_fixed_part_size_per_profile():
    new, old = KernelProfile.from_string("6.18"), KernelProfile.from_string("6.5")
    assert [fixed_part_size(new, n, 16, 20, 24) for n in (16, 19, 20, 23, 24, 100)] \
        == [16, 19, 20, 23, 24, 24]
    assert [fixed_part_size(old, n, 16, 20, 24) for n in (16, 19, 20, 23, 24, 100)] \
        == [16, 16, 20, 20, 20, 20]


def test_walk_chain_rejects_bad_chains():
    loop = bytearray(32)
    struct.pack_into("<HHI", loop, 8, 1, 1, 8)
    with pytest.raises(ValueError):
        walk_chain(loop, 8)
    with pytest.raises(ValueError):
        walk_chain(bytearray(16), 12)  # header runs past the buffer
