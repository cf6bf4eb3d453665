"""Capability chains of the VFIO info ioctls.

Models ``struct vfio_info_cap`` with vfio_info_cap_add() and vfio_info_cap_shift()
(drivers/vfio/vfio_main.c), and the part every GET_INFO handler repeats around them: where the
chain goes and how much of the fixed part is copied back.  SPEC §3.4, §3.7, §5.4, §6.8, §11.4.

A chain is a list of capabilities, each an 8-byte header followed by its body::

    struct vfio_info_cap_header {
            __u16   id;        /* Identifies capability */
            __u16   version;   /* Version specific to the capability ID */
            __u32   next;      /* Offset of next capability */
    };

``next`` is the offset of the following capability from the start of the enclosing info struct
(0 ends the chain).  Kernels from 6.6 round every capability up to a multiple of 8 bytes (the
padding is 0); older kernels pack them (SPEC §2.7 #11).

The handler then follows the same pattern everywhere (vfio_iommu_type1_get_info(),
vfio_pci_ioctl_get_info(); SPEC §5.4 rules 6-9):

* if ``argsz < sizeof(info) + chain size``: ``argsz`` is raised to that size and no capability
  is written (the call still succeeds);
* otherwise the chain is written at ``sizeof(info)`` and ``cap_offset = sizeof(info)``;
* the fixed part copied back is ``min(argsz, sizeof(info))`` bytes of a zeroed struct (6.6 and
  later), or, before 6.6, ``minsz`` bytes when ``argsz`` does not reach the end of
  ``cap_offset`` and up to the end of ``cap_offset`` otherwise (SPEC §2.7 #12, #13).

Both backends (Type1 and PAMU auto mode) build their GET_INFO with this module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vfiosim.kernel.profile import KernelProfile

#: sizeof(struct vfio_info_cap_header)
CAP_HEADER_SIZE = 8
_HEADER = struct.Struct("<HHI")


def chain_aligned(profile: KernelProfile) -> bool:
    """True when the profile aligns capabilities to 8 bytes (6.6 and later, SPEC §2.7 #11)."""
    return not profile.before("6.6")


@dataclass
class VfioInfoCap:
    """``struct vfio_info_cap``: a chain being built, as vfio_info_cap_add() builds it.

    ``aligned`` selects the 6.6 layout (each capability's size rounded up to 8 bytes).
    Offsets inside ``buf`` are relative to the chain's start until :meth:`shift` moves them.
    """

    aligned: bool = True
    buf: bytearray = field(default_factory=bytearray)
    _last: int = -1  # offset in buf of the last header, -1 when empty

    @property
    def size(self) -> int:
        """caps->size: bytes of the whole chain."""
        return len(self.buf)

    def add(self, cap_id: int, version: int, body: bytes = b"") -> int:
        """vfio_info_cap_add() + the copy of vfio_info_add_capability(): append a capability
        whose bytes after the header are ``body``; returns its offset in the chain."""
        size = CAP_HEADER_SIZE + len(body)
        if self.aligned:
            # "Ensure that the next capability struct will be aligned"
            size = (size + 7) & ~7
        off = len(self.buf)
        self.buf += _HEADER.pack(cap_id, version, 0) + body
        self.buf += bytes(off + size - len(self.buf))
        if self._last >= 0:
            _HEADER.pack_into(self.buf, self._last, *_HEADER.unpack_from(self.buf, self._last)[:2],
                              off)
        self._last = off
        return off

    def add_struct(self, cap: object) -> int:
        """Append a ctypes capability struct that starts with its ``vfio_info_cap_header``
        (id and version set by the caller, as the kernel's build_caps functions do)."""
        raw = bytes(cap)  # type: ignore[call-overload]
        cap_id, version, _ = _HEADER.unpack_from(raw, 0)
        return self.add(cap_id, version, raw[CAP_HEADER_SIZE:])

    def shift(self, offset: int) -> bytes:
        """vfio_info_cap_shift(): the chain's bytes with every ``next`` made relative to the
        start of an info struct at whose ``offset`` the chain is placed."""
        out = bytearray(self.buf)
        if not out:
            return b""
        pos = 0
        while True:
            cap_id, version, nxt = _HEADER.unpack_from(out, pos)
            if not nxt:
                break
            _HEADER.pack_into(out, pos, cap_id, version, nxt + offset)
            pos = nxt
        return bytes(out)


def build_chain(caps: list[tuple[int, int, bytes]], aligned: bool) -> VfioInfoCap:
    """A chain from ``(id, version, body)`` triples, in order (body = bytes after the
    header)."""
    chain = VfioInfoCap(aligned=aligned)
    for cap_id, version, body in caps:
        chain.add(cap_id, version, body)
    return chain


@dataclass(frozen=True, slots=True)
class CapPlacement:
    """Where the chain goes for a given ``argsz`` (SPEC §5.4 rules 6-7)."""

    argsz: int  # the argsz to report (raised when the chain does not fit)
    cap_offset: int  # 0 when the chain is not written
    data: bytes  # the bytes to write at ``cap_offset`` (empty when not written)
    has_caps: bool  # the chain is not empty: the handler sets its *_FLAG_CAPS / INFO_CAPS


def place_caps(chain: VfioInfoCap, argsz: int, info_size: int) -> CapPlacement:
    """The decision vfio_iommu_type1_get_info() and vfio_pci_ioctl_get_info() make after
    building the chain: raise ``argsz`` if the chain does not fit after a ``info_size``-byte
    info struct, else place it right after the struct."""
    if not chain.size:
        return CapPlacement(argsz, 0, b"", False)
    if argsz < info_size + chain.size:
        return CapPlacement(info_size + chain.size, 0, b"", True)
    return CapPlacement(argsz, info_size, chain.shift(info_size), True)


def fixed_part_size(profile: KernelProfile, argsz: int, minsz: int, capsz: int,
                    info_size: int) -> int:
    """Bytes of the fixed info struct copied back to the user.

    6.6 and later: ``min(argsz, sizeof(info))`` of a zeroed struct.  Before: ``capsz`` (the
    end of ``cap_offset``) when ``argsz >= capsz``, else ``minsz`` ("For backward
    compatibility, cannot require this").  SPEC §2.7 #12, #13."""
    if profile.before("6.6"):
        return capsz if argsz >= capsz else minsz
    return min(argsz, info_size)


@dataclass(frozen=True, slots=True)
class ParsedCap:
    """One capability found by :func:`walk_chain`."""

    offset: int  # from the start of the info struct
    id: int
    version: int
    next: int
    body: bytes  # bytes after the header, up to the next capability or the end of the buffer


def walk_chain(buf: bytes, cap_offset: int, limit: int | None = None) -> list[ParsedCap]:
    """Follow a chain as a client does (vfio_get_cap() in QEMU's hw/vfio/): from
    ``cap_offset`` through each ``next`` until 0.  ValueError on a header outside
    ``buf[:limit]``, a ``next`` that does not move forward, or a loop."""
    end = len(buf) if limit is None else min(limit, len(buf))
    out: list[ParsedCap] = []
    off = cap_offset
    seen: set[int] = set()
    while off:
        if off in seen or off + CAP_HEADER_SIZE > end:
            raise ValueError(f"capability header at {off} outside the buffer or looping")
        seen.add(off)
        cap_id, version, nxt = _HEADER.unpack_from(buf, off)
        if nxt and nxt <= off:
            raise ValueError(f"capability at {off}: next {nxt} does not move forward")
        body_end = nxt if nxt else end
        out.append(ParsedCap(off, cap_id, version, nxt, bytes(buf[off + CAP_HEADER_SIZE:body_end])))
        off = nxt
    return out
