"""ioctl request numbers: the asm-generic encoding of include/uapi/asm-generic/ioctl.h.

A request number packs four fields into 32 bits (x86, arm and the other asm-generic
architectures; SPEC §3.1)::

     31 30 29                     16 15          8 7           0
    +-----+-------------------------+-------------+-------------+
    | dir |          size           |    type     |     nr      |
    +-----+-------------------------+-------------+-------------+
      2              14                    8             8

``dir`` is ``_IOC_NONE`` 0, ``_IOC_WRITE`` 1 (user to kernel), ``_IOC_READ`` 2 (kernel to
user), or both.  VFIO uses ``_IO`` only: no direction, no size; every struct carries its own
``argsz`` (include/uapi/linux/vfio.h).

powerpc (the real home of PAMU) uses a different split -- 13 size bits and 3 direction bits,
with ``_IOC_NONE`` 1 (arch/powerpc/include/uapi/asm/ioctl.h).  For ``_IO`` numbers without
direction that changes the top bits: ``_IO(';', 100)`` is 0x20003b64 there.  vfiosim models
the x86_64 ABI (SPEC §3), so only the asm-generic encoding is defined here.

The C macros take a type for ``size``; these functions take a byte count or a ctypes type.
"""

from __future__ import annotations

import ctypes

_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_DIRBITS = 2

_IOC_NRMASK = (1 << _IOC_NRBITS) - 1
_IOC_TYPEMASK = (1 << _IOC_TYPEBITS) - 1
_IOC_SIZEMASK = (1 << _IOC_SIZEBITS) - 1
_IOC_DIRMASK = (1 << _IOC_DIRBITS) - 1

_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS

_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2

# "...and for the drivers/sound files..." (asm-generic/ioctl.h)
IOC_IN = _IOC_WRITE << _IOC_DIRSHIFT
IOC_OUT = _IOC_READ << _IOC_DIRSHIFT
IOC_INOUT = (_IOC_WRITE | _IOC_READ) << _IOC_DIRSHIFT
IOCSIZE_MASK = _IOC_SIZEMASK << _IOC_SIZESHIFT
IOCSIZE_SHIFT = _IOC_SIZESHIFT

SizeArg = int | type[ctypes._SimpleCData] | type[ctypes.Structure] | type[ctypes.Union]


def _field(name: str, value: int, mask: int) -> int:
    # The C macros check this at compile time (_IOC_TYPECHECK and the masks); a value that
    # does not fit would silently corrupt the neighbouring field.
    if not 0 <= value <= mask:
        raise ValueError(f"ioctl {name} {value:#x} does not fit in {mask.bit_length()} bits")
    return value


def _type_value(type_: int | str) -> int:
    """The ``type`` argument: an int, or a one-character string as C writes ``';'``."""
    if isinstance(type_, str):
        if len(type_) != 1:
            raise ValueError(f"ioctl type must be one character, not {type_!r}")
        return ord(type_)
    return type_


def _size_value(size: SizeArg) -> int:
    """``sizeof(size)`` for a ctypes type, or the byte count itself."""
    if isinstance(size, int):
        return size
    return ctypes.sizeof(size)


def _IOC(dir: int, type: int | str, nr: int, size: int) -> int:
    """``_IOC(dir, type, nr, size)``: pack the four fields into a request number."""
    return (
        (_field("dir", dir, _IOC_DIRMASK) << _IOC_DIRSHIFT)
        | (_field("type", _type_value(type), _IOC_TYPEMASK) << _IOC_TYPESHIFT)
        | (_field("nr", nr, _IOC_NRMASK) << _IOC_NRSHIFT)
        | (_field("size", size, _IOC_SIZEMASK) << _IOC_SIZESHIFT)
    )


def _IO(type: int | str, nr: int) -> int:
    """``_IO(type, nr)``: no argument copied by the kernel's ioctl core."""
    return _IOC(_IOC_NONE, type, nr, 0)


def _IOR(type: int | str, nr: int, size: SizeArg) -> int:
    """``_IOR(type, nr, argtype)``: the kernel writes ``sizeof(argtype)`` bytes to user."""
    return _IOC(_IOC_READ, type, nr, _size_value(size))


def _IOW(type: int | str, nr: int, size: SizeArg) -> int:
    """``_IOW(type, nr, argtype)``: the kernel reads ``sizeof(argtype)`` bytes from user."""
    return _IOC(_IOC_WRITE, type, nr, _size_value(size))


def _IOWR(type: int | str, nr: int, size: SizeArg) -> int:
    """``_IOWR(type, nr, argtype)``: both directions."""
    return _IOC(_IOC_READ | _IOC_WRITE, type, nr, _size_value(size))


def _IOC_DIR(nr: int) -> int:
    """The direction bits of a request number."""
    return (nr >> _IOC_DIRSHIFT) & _IOC_DIRMASK


def _IOC_TYPE(nr: int) -> int:
    """The type (``magic``) byte of a request number."""
    return (nr >> _IOC_TYPESHIFT) & _IOC_TYPEMASK


def _IOC_NR(nr: int) -> int:
    """The command number within the type."""
    return (nr >> _IOC_NRSHIFT) & _IOC_NRMASK


def _IOC_SIZE(nr: int) -> int:
    """The argument size encoded in a request number (0 for every VFIO ioctl)."""
    return (nr >> _IOC_SIZESHIFT) & _IOC_SIZEMASK
