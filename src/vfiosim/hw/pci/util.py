"""Byte-enable helper shared by every config and register write (cocotbext-pcie's
``byte_mask_update``, written afresh)."""

from __future__ import annotations


def byte_mask_update(old: int, byte_enable: int, new: int, bitmask: int = 0xFFFF_FFFF) -> int:
    """Merge ``new`` into ``old`` on the byte lanes set in ``byte_enable`` (bit i = byte i),
    changing only the bits set in ``bitmask`` (the register's writable bits)."""
    lanes = 0
    i = 0
    be = byte_enable
    while be:
        if be & 1:
            lanes |= 0xFF << (8 * i)
        be >>= 1
        i += 1
    m = lanes & bitmask
    return (old & ~m) | (new & m)


def w1c_update(old: int, byte_enable: int, new: int, w1cmask: int) -> int:
    """Clear the write-1-to-clear bits of ``old`` that ``new`` sets on the enabled lanes."""
    return old & ~byte_mask_update(0, byte_enable, new, w1cmask)


def size_to_be(offset: int, size: int) -> int:
    """Byte enables of an access of ``size`` bytes at ``offset`` within its dword."""
    return ((1 << size) - 1) << (offset & 3)
