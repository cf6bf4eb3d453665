"""User access: the ioctl argument, the caller's memory and the caller's files.

Models copy_from_user()/copy_to_user() (include/linux/uaccess.h), the pinning checks of
vaddr_get_pfns() (drivers/vfio/vfio_iommu_type1.c), eventfd_ctx_fdget() (fs/eventfd.c) and
fdget() (include/linux/file.h) -- everything a request handler needs from the process that
made the call.  SPEC §3.7, §12.1, §12.2.

Handlers never touch Python buffers or other processes directly.  They get:

* a :class:`UserArg` -- the ioctl's third argument: ``value`` (the raw unsigned long) and
  ``read``/``write`` at an offset from it, each failing with EFAULT like copy_*_user;
* a :class:`Process` -- the calling thread group: its memory (:class:`UserMemory`), its fds
  (``fget``, ``eventfd_get``) and its RLIMIT_MEMLOCK.

The in-process front end (:mod:`vfiosim.api`) implements these with this process's memory;
the supervisor (:mod:`vfiosim.supervisor`) implements them for a traced program.  The
handlers are the same (SPEC §12.2).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vfiosim.kernel.vfio_main import File

PAGE_SIZE = 4096
PAGE_SHIFT = 12


def kerr(code: int) -> OSError:
    """The exception for ``return -code;``: OSError with the kernel's errno."""
    return OSError(code, os.strerror(code))


# ---------------------------------------------------------------------------------------------
# The ioctl argument


class UserArg(Protocol):
    """The third argument of ioctl(2) as a handler sees it."""

    value: int

    def read(self, offset: int, size: int) -> bytes:
        """copy_from_user(dst, arg + offset, size); EFAULT when it cannot be read."""
        ...

    def write(self, offset: int, data: bytes) -> None:
        """copy_to_user(arg + offset, data); EFAULT when it cannot be written."""
        ...


class BufferArg:
    """A Python buffer passed in-process (``k.ioctl(fd, req, buf)``), like fcntl.ioctl's.

    Reads past the buffer's end, and writes to a read-only buffer, fail with EFAULT
    (SPEC §3.7 rule 4, Appendix A #26).
    """

    __slots__ = ("_mv", "value")

    def __init__(self, buf: object) -> None:
        mv = memoryview(buf).cast("B")  # type: ignore[arg-type]
        self._mv = mv
        # The value a C caller would pass is the buffer's address; it only matters to
        # by-value ioctls given a buffer by mistake.
        self.value = _buffer_address(mv)

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > len(self._mv):
            raise kerr(errno.EFAULT)
        return self._mv[offset : offset + size].tobytes()

    def write(self, offset: int, data: bytes) -> None:
        n = len(data)
        if self._mv.readonly or offset < 0 or offset + n > len(self._mv):
            raise kerr(errno.EFAULT)
        self._mv[offset : offset + n] = data


class IntArg:
    """An integer argument: a by-value argument, or a pointer into the caller's memory."""

    __slots__ = ("mm", "value")

    def __init__(self, value: int, mm: UserMemory) -> None:
        self.value = value & 0xFFFF_FFFF_FFFF_FFFF
        self.mm = mm

    def read(self, offset: int, size: int) -> bytes:
        return self.mm.read(self.value + offset, size)

    def write(self, offset: int, data: bytes) -> None:
        self.mm.write(self.value + offset, data)


def _buffer_address(mv: memoryview) -> int:
    if mv.readonly or len(mv) == 0:
        return 0
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(mv))
    except (TypeError, ValueError):
        return 0


# ---------------------------------------------------------------------------------------------
# The caller's memory


class UserMemory(Protocol):
    """A process's address space, as the kernel reaches it (mm_struct)."""

    def read(self, addr: int, size: int) -> bytes:
        """Read user memory; EFAULT if any byte is not mapped readable."""
        ...

    def write(self, addr: int, data: bytes) -> None:
        """Write user memory honouring page protection; EFAULT otherwise."""
        ...

    def check(self, addr: int, size: int, write: bool) -> None:
        """Pinning check (vaddr_get_pfns): EFAULT if a page of [addr, addr+size) is not
        mapped, or not writable when ``write``."""
        ...

    def page_size(self, addr: int) -> int:
        """Backing page size of the mapping at addr (KernelPageSize in smaps); SPEC §10.3."""
        ...


def check_maps(text: bytes, addr: int, size: int, write: bool) -> None:
    """EFAULT unless [addr, addr+size) is covered by readable (and, for ``write``, writable)
    mappings, read from the bytes of /proc/PID/maps; only the lines up to the end of the range
    are parsed (the file is sorted by address)."""
    if size <= 0:
        return
    end = addr + size
    pos = addr
    for line in text.split(b"\n"):
        sp = line.find(b" ")
        if sp < 0:
            continue
        lo_s, _, hi_s = line[:sp].partition(b"-")
        hi = int(hi_s, 16)
        if hi <= pos:
            continue
        if int(lo_s, 16) > pos:
            break
        perms = line[sp + 1:sp + 3]
        if perms[:1] != b"r" or (write and perms[1:2] != b"w"):
            break
        pos = hi
        if pos >= end:
            return
    raise kerr(errno.EFAULT)


def smaps_page_size(pid: int | str, addr: int) -> int:
    """KernelPageSize of the VMA containing addr, from /proc/PID/smaps (4 KiB if unknown)."""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            inside = False
            for line in f:
                head = line.split(None, 1)[0] if line.strip() else ""
                if "-" in head and not head.endswith(":"):
                    lo, _, hi = head.partition("-")
                    try:
                        inside = int(lo, 16) <= addr < int(hi, 16)
                    except ValueError:
                        inside = False
                elif inside and line.startswith("KernelPageSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return PAGE_SIZE


# By soname: find_library() would run ldconfig (~2 ms at every start of `vfiosim run`).
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


class _iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc.process_vm_readv.restype = ctypes.c_ssize_t
_libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_iovec), ctypes.c_ulong,
                                   ctypes.POINTER(_iovec), ctypes.c_ulong, ctypes.c_ulong]
_libc.process_vm_writev.restype = ctypes.c_ssize_t
_libc.process_vm_writev.argtypes = _libc.process_vm_readv.argtypes
_libc.mincore.restype = ctypes.c_int
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_libc.madvise.restype = ctypes.c_int
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

MADV_POPULATE_READ = 22  # include/uapi/asm-generic/mman-common.h, Linux 5.14
MADV_POPULATE_WRITE = 23
_populate: bool | None = None


def _populate_supported() -> bool:
    """Whether this host's madvise() knows MADV_POPULATE_* (probed once on our own stack)."""
    global _populate
    if _populate is None:
        probe = ctypes.create_string_buffer(2 * PAGE_SIZE)
        base = (ctypes.addressof(probe) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        _populate = _libc.madvise(base, PAGE_SIZE, MADV_POPULATE_READ) == 0
    return _populate


def process_vm_read(pid: int, addr: int, size: int) -> bytes:
    """Read [addr, addr+size) of pid with process_vm_readv; EFAULT on any unmapped byte.

    Remote iovecs are split at page boundaries: one iovec fails whole at a fault
    (INTERCEPTION.md pitfall 11), and a short count is turned into EFAULT.
    """
    if size == 0:
        return b""
    buf = ctypes.create_string_buffer(size)
    _vm_xfer(_libc.process_vm_readv, pid, addr, ctypes.addressof(buf), size)
    return buf.raw


def process_vm_write(pid: int, addr: int, data: bytes) -> None:
    """Write data at addr in pid with process_vm_writev (honours protection); EFAULT."""
    size = len(data)
    if size == 0:
        return
    buf = ctypes.create_string_buffer(bytes(data), size)
    _vm_xfer(_libc.process_vm_writev, pid, addr, ctypes.addressof(buf), size)


def _vm_xfer(fn: object, pid: int, remote: int, local: int, size: int) -> None:
    if remote < 0 or remote + size > 1 << 64:
        raise kerr(errno.EFAULT)
    # One local iovec, remote iovecs split at page boundaries (at most 1024 per call).
    done = 0
    while done < size:
        riovs = []
        pos = remote + done
        chunk_end = min(remote + size, pos + 1024 * PAGE_SIZE)
        while pos < chunk_end:
            nxt = min((pos & ~(PAGE_SIZE - 1)) + PAGE_SIZE, chunk_end)
            riovs.append((pos, nxt - pos))
            pos = nxt
        n = chunk_end - (remote + done)
        liov = _iovec(local + done, n)
        rarr = (_iovec * len(riovs))(*[_iovec(a, ln) for a, ln in riovs])
        got = fn(pid, ctypes.byref(liov), 1, rarr, len(riovs), 0)  # type: ignore[operator]
        if got != n:
            raise kerr(errno.EFAULT)
        done += n


class LocalMemory:
    """This process's memory, for the in-process API (SPEC §12.1).

    ``check`` reads /proc/self/maps; ``read``/``write`` use process_vm_readv/writev on our own
    pid so that a bad address is EFAULT, never a crash.  ``dma_read``/``dma_write``/``copy``
    are the fast paths devices use on pinned memory: mincore() proves the pages are still
    mapped, then ctypes.memmove moves the bytes.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()

    def check(self, addr: int, size: int, write: bool) -> None:
        """Pin check by prefaulting, as get_user_pages() does: madvise(MADV_POPULATE_READ or
        _WRITE) faults every page in (breaking COW for a write pin) and fails where an access
        would fault.  Kernels before 5.14 lack it: parse /proc/self/maps instead."""
        if size <= 0:
            return
        if addr < 0 or addr + size > 1 << 64:
            raise kerr(errno.EFAULT)
        if _populate_supported():
            base = addr & ~(PAGE_SIZE - 1)
            length = ((addr + size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)) - base
            advice = MADV_POPULATE_WRITE if write else MADV_POPULATE_READ
            if _libc.madvise(base, length, advice) != 0:
                raise kerr(errno.EFAULT)
            return
        with open("/proc/self/maps", "rb") as f:
            check_maps(f.read(), addr, size, write)

    def read(self, addr: int, size: int) -> bytes:
        return process_vm_read(self.pid, addr, size)

    def write(self, addr: int, data: bytes) -> None:
        process_vm_write(self.pid, addr, data)

    def page_size(self, addr: int) -> int:
        return smaps_page_size("self", addr)

    # Fast paths for device DMA on memory that MAP_DMA checked and pinned.
    def mapped(self, addr: int, size: int) -> bool:
        """True if every page of [addr, addr+size) is mapped (mincore does not fault)."""
        if size <= 0:
            return True
        base = addr & ~(PAGE_SIZE - 1)
        length = addr + size - base
        vec = ctypes.create_string_buffer((length + PAGE_SIZE - 1) // PAGE_SIZE)
        return _libc.mincore(base, length, vec) == 0

    def dma_read(self, addr: int, size: int) -> bytes:
        if not self.mapped(addr, size):
            raise kerr(errno.EFAULT)
        return ctypes.string_at(addr, size)

    def dma_write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if not self.mapped(addr, n):
            raise kerr(errno.EFAULT)
        src = (ctypes.c_char * n).from_buffer_copy(data) if n else None
        if n:
            ctypes.memmove(addr, src, n)

    def copy(self, dst: int, src: int, size: int) -> None:
        """memmove within this process (device-to-device copies between pinned buffers)."""
        if not (self.mapped(src, size) and self.mapped(dst, size)):
            raise kerr(errno.EFAULT)
        ctypes.memmove(dst, src, size)


# ---------------------------------------------------------------------------------------------
# Eventfds and files of the caller


class EventFd:
    """A reference the kernel holds on an eventfd (struct eventfd_ctx).

    ``fd`` is an fd of *this* (the model's) process referring to the caller's eventfd: a dup
    in-process, a pidfd_getfd() copy under ``vfiosim run``.  ``signal`` is eventfd_signal().
    ``client_pid``/``client_fd`` name the fd the caller passed, when the front end knows it:
    the sanitizer asks :meth:`client_holds` whether the caller still has it (SPEC §13.8).
    """

    def __init__(self, fd: int, client_pid: int | None = None,
                 client_fd: int | None = None) -> None:
        self.fd = fd
        self._lock = threading.Lock()
        self.signals = 0
        self.client_pid = client_pid
        self.client_fd = client_fd

    def client_holds(self) -> bool | None:
        """Does the caller's fd still refer to this eventfd?  None when it cannot be told
        (client unknown, or kcmp(2) unavailable or refused)."""
        if self.client_pid is None or self.client_fd is None or self.fd < 0:
            return None
        return kcmp_file(self.client_pid, self.client_fd, os.getpid(), self.fd)

    def signal(self) -> None:
        with self._lock:
            if self.fd < 0:
                return
            self.signals += 1
            try:
                os.eventfd_write(self.fd, 1)
            except BlockingIOError:  # counter at its maximum: the kernel drops it too
                pass

    def put(self) -> None:
        """eventfd_ctx_put(): drop the model's reference."""
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def __del__(self) -> None:  # a leaked reference must not leak an fd
        try:
            self.put()
        except Exception:
            pass


#: kcmp(2) syscall numbers (KCMP_FILE = 0 compares two fds' struct file).
_SYS_KCMP = {"x86_64": 312, "aarch64": 272, "ppc64": 354, "ppc64le": 354, "ppc": 354,
             "i686": 349, "i386": 349}
KCMP_FILE = 0


def kcmp_file(pid1: int, fd1: int, pid2: int, fd2: int) -> bool | None:
    """kcmp(pid1, pid2, KCMP_FILE, fd1, fd2) (kernel/kcmp.c): True if both fds are the same
    open file; False if they differ or one is not open (EBADF); None when it cannot be told
    (no kcmp: ENOSYS; a process gone: ESRCH; EPERM)."""
    nr = _SYS_KCMP.get(os.uname().machine)
    if nr is None:
        return None
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(pid1), ctypes.c_long(pid2),
                        ctypes.c_long(KCMP_FILE), ctypes.c_ulong(fd1), ctypes.c_ulong(fd2))
    if ret < 0:
        return False if ctypes.get_errno() == errno.EBADF else None
    return ret == 0


def is_eventfd(path_or_link: str) -> bool:
    return path_or_link == "anon_inode:[eventfd]"


class Process(Protocol):
    """The calling thread group, as the handlers see it."""

    pid: int  # tgid: mappings and locked_vm belong to it (SPEC §5.2, INTERCEPTION.md §2.8)
    mm: UserMemory

    def fget(self, fd: int) -> File | None:
        """fdget(): the model file behind fd, None if fd is open but not a model file; EBADF
        if it is not open."""
        ...

    def eventfd_get(self, fd: int) -> EventFd:
        """eventfd_ctx_fdget(): EBADF if fd is not open, EINVAL if it is not an eventfd."""
        ...

    def memlock_limit(self) -> int | None:
        """Bytes this process may pin (RLIMIT_MEMLOCK); None when unlimited (CAP_IPC_LOCK or
        RLIM_INFINITY)."""
        ...


def has_cap_ipc_lock(pid: int | str = "self") -> bool:
    """CAP_IPC_LOCK (bit 14) in the effective set of /proc/PID/status."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 14))
    except OSError:
        pass
    return False


@dataclass
class LocalProcess:
    """This Python process as a VFIO client (the in-process API).

    Its fds are the Kernel object's own fd table for model files (SPEC §12.1) and real OS fds
    for eventfds.  ``memlock_override`` and ``cap_ipc_lock`` let a test run as an unprivileged
    process would: ``k.process.cap_ipc_lock = False; k.process.memlock_override = 1 << 20``.
    """

    fdtable: dict[int, File]
    mm: LocalMemory = field(default_factory=LocalMemory)
    pid: int = field(default_factory=os.getpid)
    cap_ipc_lock: bool | None = None  # None: read the real capability (at first use)
    memlock_override: int | None = None  # None: read the real RLIMIT_MEMLOCK

    def fget(self, fd: int) -> File | None:
        f = self.fdtable.get(fd)
        if f is None:
            raise kerr(errno.EBADF)
        return f

    def eventfd_get(self, fd: int) -> EventFd:
        if fd < 0:
            raise kerr(errno.EBADF)
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            raise kerr(errno.EBADF) from None
        if not is_eventfd(link):
            raise kerr(errno.EINVAL)
        # The fd lives in this very process, whatever ``pid`` a test gave this client.
        return EventFd(os.dup(fd), client_pid=os.getpid(), client_fd=fd)

    def memlock_limit(self) -> int | None:
        if self.cap_ipc_lock is None:
            # capable(CAP_IPC_LOCK): read once; a process rarely changes its capabilities and
            # /proc/self/status costs ~200 us a read.
            self.cap_ipc_lock = has_cap_ipc_lock()
        if self.cap_ipc_lock:
            return None
        if self.memlock_override is not None:
            return self.memlock_override
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        return None if soft == resource.RLIM_INFINITY else soft


# ---------------------------------------------------------------------------------------------
# Struct helpers used by every handler


def read_struct(arg: UserArg, cls: type, size: int, offset: int = 0):  # noqa: ANN201
    """copy_from_user(&s, arg + offset, size) into a zeroed ctypes struct ``cls``.

    ``size`` is what the kernel copies (usually minsz); the rest of the struct stays zero.
    Each handler calls this once per argument (SPEC §3.7 rule 1: read once)."""
    raw = arg.read(offset, size)
    full = ctypes.sizeof(cls)
    if size < full:
        raw = raw + bytes(full - size)
    return cls.from_buffer_copy(raw[:full])


def write_struct(arg: UserArg, obj: ctypes.Structure, size: int, offset: int = 0) -> None:
    """copy_to_user(arg + offset, &s, size): the first ``size`` bytes of ``obj``."""
    arg.write(offset, bytes(obj)[:size])
