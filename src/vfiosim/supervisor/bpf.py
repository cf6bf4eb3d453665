"""The seccomp filter of `vfiosim run`: notify opens always, fd calls only on the fd window.

INTERCEPTION.md §2.2.  Model fds live in [WINDOW_LO, WINDOW_HI]; a call whose fd argument is
outside the window is allowed in the kernel and costs ~50 ns.  Only the low 32 bits of an fd
argument are compared (the kernel truncates fds to unsigned int), so -1 (anonymous mmap) and
AT_FDCWD fall outside.  Calls of another ABI (i386 ``int 0x80``) are allowed: they are not
served (documented limit); x32 calls (nr with bit 30) are refused with ENOSYS so that they
cannot reach a placeholder node behind the model's back.
"""

from __future__ import annotations

import ctypes
import errno

from vfiosim.uapi import seccomp as sc

WINDOW_LO = 900
WINDOW_HI = 999

ALWAYS = ("open", "openat", "openat2", "creat", "execve", "execveat", "close_range")
FD_ARG0 = ("ioctl", "pread64", "pwrite64", "read", "write", "readv", "writev", "preadv",
           "pwritev", "preadv2", "pwritev2", "close", "dup", "fcntl", "fstat", "newfstatat",
           "statx")
FD_ARG1 = ("dup2", "dup3")
FD_ARG4 = ("mmap",)


def build_filter(lo: int = WINDOW_LO, hi: int = WINDOW_HI) -> list[tuple[int, int, int, int]]:
    """The program as (code, jt, jf, k) tuples."""
    notify, allow = "NOTIFY", "ALLOW"
    # Instructions with symbolic jump targets, resolved below (forward jumps only).
    prog: list[tuple[int, object, object, int]] = []
    labels: dict[str, int] = {}

    def label(name: str) -> None:
        labels[name] = len(prog)

    prog.append((sc.BPF_LD_W_ABS, 0, 0, sc.SECCOMP_DATA_ARCH))
    prog.append((sc.BPF_JMP_JEQ_K, 0, allow, sc.AUDIT_ARCH_X86_64))
    prog.append((sc.BPF_LD_W_ABS, 0, 0, sc.SECCOMP_DATA_NR))
    prog.append((sc.BPF_JMP_JGE_K, "X32", 0, sc.X32_SYSCALL_BIT))
    for name in ALWAYS:
        prog.append((sc.BPF_JMP_JEQ_K, notify, 0, sc.NR[name]))
    for name in FD_ARG0:
        prog.append((sc.BPF_JMP_JEQ_K, "ARG0", 0, sc.NR[name]))
    for name in FD_ARG1:
        prog.append((sc.BPF_JMP_JEQ_K, "ARG1", 0, sc.NR[name]))
    for name in FD_ARG4:
        prog.append((sc.BPF_JMP_JEQ_K, "ARG4", 0, sc.NR[name]))
    prog.append((sc.BPF_RET_K, 0, 0, sc.SECCOMP_RET_ALLOW))
    for i in (0, 1, 4):
        label(f"ARG{i}")
        prog.append((sc.BPF_LD_W_ABS, 0, 0, sc.seccomp_data_arg_lo(i)))
        prog.append((sc.BPF_JMP_JGE_K, 0, allow, lo))
        prog.append((sc.BPF_JMP_JGE_K, allow, notify, hi + 1))
    label("X32")
    prog.append((sc.BPF_RET_K, 0, 0, sc.SECCOMP_RET_ERRNO | errno.ENOSYS))
    label(notify)
    prog.append((sc.BPF_RET_K, 0, 0, sc.SECCOMP_RET_USER_NOTIF))
    label(allow)
    prog.append((sc.BPF_RET_K, 0, 0, sc.SECCOMP_RET_ALLOW))

    out: list[tuple[int, int, int, int]] = []
    for pc, (code, jt, jf, k) in enumerate(prog):
        offs = []
        for target in (jt, jf):
            if isinstance(target, str):
                off = labels[target] - pc - 1
                if not 0 <= off <= 255:
                    raise ValueError(f"BPF jump to {target} out of range: {off}")
                offs.append(off)
            else:
                offs.append(int(target))  # type: ignore[arg-type]
        out.append((code, offs[0], offs[1], k))
    return out


class Program:
    """A sock_fprog kept alive with its instruction array."""

    def __init__(self, insns: list[tuple[int, int, int, int]]) -> None:
        self.array = (sc.sock_filter * len(insns))(*[sc.sock_filter(*i) for i in insns])
        self.fprog = sc.sock_fprog(len(insns), ctypes.cast(self.array,
                                                           ctypes.POINTER(sc.sock_filter)))


def run_filter(insns: list[tuple[int, int, int, int]], nr: int, args: tuple[int, ...] = (),
               arch: int = sc.AUDIT_ARCH_X86_64) -> int:
    """Interpret the program on a seccomp_data (for tests of the filter logic)."""
    data = sc.seccomp_data()
    data.nr = nr
    data.arch = arch
    for i, a in enumerate(args):
        data.args[i] = a & 0xFFFF_FFFF_FFFF_FFFF
    raw = bytes(data)
    acc = 0
    pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == sc.BPF_LD_W_ABS:
            acc = int.from_bytes(raw[k:k + 4], "little")
            pc += 1
        elif code == sc.BPF_JMP_JEQ_K:
            pc += 1 + (jt if acc == k else jf)
        elif code == sc.BPF_JMP_JGE_K:
            pc += 1 + (jt if acc >= k else jf)
        elif code == sc.BPF_RET_K:
            return k
        else:
            raise ValueError(f"unknown BPF opcode {code:#x}")
