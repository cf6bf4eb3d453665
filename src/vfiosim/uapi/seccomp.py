"""seccomp user-notification uAPI for x86_64 (include/uapi/linux/seccomp.h, filter.h, audit.h).

Values and layouts: INTERCEPTION.md §4.  The structs are extensible; the supervisor checks
``SECCOMP_GET_NOTIF_SIZES`` at start-up against the sizes below.
"""

from __future__ import annotations

import ctypes

# seccomp(2) operations and filter flags
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_NOTIF_SIZES = 3
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1

# filter return values
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ERRNO = 0x00050000

SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_ADDFD_FLAG_SETFD = 1
SECCOMP_ADDFD_FLAG_SEND = 2
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1

SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102
SECCOMP_IOCTL_NOTIF_ADDFD = 0x40182103
SECCOMP_IOCTL_NOTIF_SET_FLAGS = 0x40082104

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# classic BPF opcodes (include/uapi/linux/filter.h, bpf_common.h)
BPF_LD_W_ABS = 0x20
BPF_JMP_JEQ_K = 0x15
BPF_JMP_JGE_K = 0x35
BPF_JMP_JA = 0x05
BPF_RET_K = 0x06

# offsets in struct seccomp_data
SECCOMP_DATA_NR = 0
SECCOMP_DATA_ARCH = 4


def seccomp_data_arg_lo(i: int) -> int:
    """Offset of the low 32 bits of args[i] (little endian)."""
    return 16 + 8 * i


# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl)
NR = {
    "read": 0, "write": 1, "open": 2, "close": 3, "fstat": 5, "lseek": 8, "mmap": 9,
    "ioctl": 16, "pread64": 17, "pwrite64": 18, "readv": 19, "writev": 20, "dup": 32,
    "dup2": 33, "execve": 59, "fcntl": 72, "creat": 85, "newfstatat": 262, "openat": 257,
    "dup3": 292, "preadv": 295, "pwritev": 296, "execveat": 322, "preadv2": 327,
    "pwritev2": 328, "statx": 332, "close_range": 436, "openat2": 437, "seccomp": 317,
    "kcmp": 312, "pidfd_open": 434, "pidfd_getfd": 438, "process_vm_readv": 310,
    "process_vm_writev": 311, "unshare": 272, "mount": 165,
}
NAMES = {v: k for k, v in NR.items()}


class seccomp_data(ctypes.Structure):
    _fields_ = [
        ("nr", ctypes.c_int32),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    ]


class seccomp_notif(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("data", seccomp_data),
    ]


class seccomp_notif_resp(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("val", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    ]


class seccomp_notif_addfd(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("srcfd", ctypes.c_uint32),
        ("newfd", ctypes.c_uint32),
        ("newfd_flags", ctypes.c_uint32),
    ]


class seccomp_notif_sizes(ctypes.Structure):
    _fields_ = [
        ("seccomp_notif", ctypes.c_uint16),
        ("seccomp_notif_resp", ctypes.c_uint16),
        ("seccomp_data", ctypes.c_uint16),
    ]


class sock_filter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class sock_fprog(ctypes.Structure):
    _fields_ = [
        ("len", ctypes.c_uint16),
        ("filter", ctypes.POINTER(sock_filter)),
    ]


class open_how(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


assert ctypes.sizeof(seccomp_data) == 64
assert ctypes.sizeof(seccomp_notif) == 80
assert ctypes.sizeof(seccomp_notif_resp) == 24
assert ctypes.sizeof(seccomp_notif_addfd) == 24
assert ctypes.sizeof(sock_fprog) == 16
