"""ctypes wrappers for the system calls the supervisor needs (x86_64)."""

from __future__ import annotations

import ctypes
import os

from vfiosim.uapi import seccomp as sc


def _load_libc() -> ctypes.CDLL:
    # glibc's soname first: ctypes.util.find_library runs ldconfig (~2 ms of start-up).
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c"), use_errno=True)


libc = _load_libc()
_syscall = libc.syscall
_syscall.restype = ctypes.c_long
_ioctl = libc.ioctl
_ioctl.restype = ctypes.c_int
_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_prctl = libc.prctl
_prctl.restype = ctypes.c_int
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                   ctypes.c_ulong]
_mount = libc.mount
_mount.restype = ctypes.c_int
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                   ctypes.c_char_p]
_unshare = libc.unshare
_unshare.restype = ctypes.c_int
_unshare.argtypes = [ctypes.c_int]
_timerfd_create = libc.timerfd_create
_timerfd_create.restype = ctypes.c_int
_timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
_timerfd_settime = libc.timerfd_settime
_timerfd_settime.restype = ctypes.c_int
_timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
CLOCK_MONOTONIC = 1
TFD_TIMER_ABSTIME = 1
# process_vm_readv/writev with plain addresses: callers pass the addresses of prebuilt iovec
# arrays (remote.py), so a call costs one foreign call and no per-call ctypes objects.
process_vm_readv = libc.process_vm_readv
process_vm_readv.restype = ctypes.c_ssize_t
process_vm_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                             ctypes.c_ulong, ctypes.c_ulong]
process_vm_writev = libc.process_vm_writev
process_vm_writev.restype = ctypes.c_ssize_t
process_vm_writev.argtypes = process_vm_readv.argtypes

PIDFD_THREAD = os.O_EXCL
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 1
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18


def _check(ret: int) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret


def seccomp(op: int, flags: int, arg: int) -> int:
    return _check(_syscall(sc.NR["seccomp"], ctypes.c_uint(op), ctypes.c_uint(flags),
                           ctypes.c_void_p(arg)))


def notif_sizes() -> sc.seccomp_notif_sizes:
    s = sc.seccomp_notif_sizes()
    seccomp(sc.SECCOMP_GET_NOTIF_SIZES, 0, ctypes.addressof(s))
    return s


def pidfd_open(pid: int, flags: int = 0) -> int:
    return _check(_syscall(sc.NR["pidfd_open"], ctypes.c_int(pid), ctypes.c_uint(flags)))


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    return _check(_syscall(sc.NR["pidfd_getfd"], ctypes.c_int(pidfd), ctypes.c_int(targetfd),
                           ctypes.c_uint(0)))


def prctl(option: int, arg2: int = 0) -> int:
    return _check(_prctl(option, arg2, 0, 0, 0))


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    def b(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    _check(_mount(b(source), b(target), b(fstype), flags, b(data)))


def unshare(flags: int) -> None:
    _check(_unshare(flags))


def timerfd_create() -> int:
    """A CLOCK_MONOTONIC timerfd, non-blocking and close-on-exec."""
    return _check(_timerfd_create(CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC))


def timerfd_set_abs(fd: int, deadline_ns: int) -> None:
    """Arm fd to expire at CLOCK_MONOTONIC deadline_ns (0 disarms)."""
    spec = (ctypes.c_int64 * 4)(0, 0, deadline_ns // 1_000_000_000, deadline_ns % 1_000_000_000)
    _check(_timerfd_settime(fd, TFD_TIMER_ABSTIME, ctypes.addressof(spec), None))


def kernel_version() -> tuple[int, int]:
    rel = os.uname().release
    parts = rel.split(".")
    try:
        major = int(parts[0])
        minor = int("".join(ch for ch in parts[1] if ch.isdigit()) or "0")
    except (IndexError, ValueError):
        return (0, 0)
    return (major, minor)
