"""The traced program as the request handlers see it: RemoteProcess, RemoteMemory, RemoteArg.

Implements the Process / UserMemory / UserArg protocols of :mod:`vfiosim.kernel.uaccess` for
a thread group of the program run under `vfiosim run`:

* argument structs are read once from ``/proc/TGID/mem`` (fast for small reads; reopened after
  execve, pitfall 13); a short read is EFAULT;
* everything written back, and all device DMA, goes through process_vm_writev/readv, which
  honour page protection (pitfall 12);
* eventfds named in SET_IRQS are fetched with pidfd_getfd (INTERCEPTION.md §2.7);
* one argument read is capped at :data:`MAX_ARG_READ` bytes: a hostile ``argsz`` or count
  cannot make the supervisor copy gigabytes (the read fails with E2BIG instead).
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Callable
from typing import TYPE_CHECKING

from vfiosim.kernel.uaccess import (
    EventFd,
    check_maps,
    is_eventfd,
    kerr,
    process_vm_read,
    process_vm_write,
    smaps_page_size,
)
from vfiosim.supervisor import syscalls

if TYPE_CHECKING:
    from vfiosim.kernel.vfio_main import File

MAX_ARG_READ = 1 << 20


class RemoteMemory:
    """The address space of thread group ``pid`` (UserMemory protocol)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._mem = -1

    def _memfd(self) -> int:
        if self._mem < 0:
            try:
                self._mem = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise kerr(errno.EFAULT) from None
        return self._mem

    def reopen(self) -> None:
        """After execve the old mm is gone: the mem fd reads nothing (pitfall 13)."""
        self.close()

    def close(self) -> None:
        if self._mem >= 0:
            os.close(self._mem)
            self._mem = -1

    def read(self, addr: int, size: int) -> bytes:
        if size <= 0:
            return b""
        if addr < 0 or addr + size > 1 << 64 or addr + size > 0x7FFF_FFFF_FFFF_FFFF:
            raise kerr(errno.EFAULT)
        if size > 64 * 1024:
            return process_vm_read(self.pid, addr, size)
        try:
            data = os.pread(self._memfd(), size, addr)
        except OSError:
            raise kerr(errno.EFAULT) from None
        if len(data) != size:
            raise kerr(errno.EFAULT)
        return data

    def write(self, addr: int, data: bytes) -> None:
        process_vm_write(self.pid, addr, data)

    def check(self, addr: int, size: int, write: bool) -> None:
        try:
            with open(f"/proc/{self.pid}/maps", "rb") as f:
                text = f.read()
        except OSError:
            raise kerr(errno.EFAULT) from None
        check_maps(text, addr, size, write)

    def page_size(self, addr: int) -> int:
        return smaps_page_size(self.pid, addr)

    def dma_read(self, addr: int, size: int) -> bytes:
        return process_vm_read(self.pid, addr, size)

    def dma_write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        process_vm_write(self.pid, addr, bytes(data))

    def copy(self, dst: int, src: int, size: int) -> None:
        process_vm_write(self.pid, dst, process_vm_read(self.pid, src, size))


class RemoteArg:
    """The ioctl's third argument in the traced program (UserArg protocol).

    Records the first 4 bytes of the first read at offset 0 (``argsz`` for the trace) so the
    trace needs no second fetch."""

    __slots__ = ("argsz", "mm", "value")

    def __init__(self, value: int, mm: RemoteMemory) -> None:
        self.value = value & 0xFFFF_FFFF_FFFF_FFFF
        self.mm = mm
        self.argsz: int | None = None

    def read(self, offset: int, size: int) -> bytes:
        if size > MAX_ARG_READ:
            raise kerr(errno.E2BIG)
        data = self.mm.read(self.value + offset, size)
        if offset == 0 and self.argsz is None and size >= 4:
            self.argsz = int.from_bytes(data[:4], "little")
        return data

    def write(self, offset: int, data: bytes) -> None:
        self.mm.write(self.value + offset, data)


class RemoteProcess:
    """A thread group of the traced program (Process protocol).

    ``lookup(tid, fd)`` is the supervisor's fd -> model file resolution; it is injected so
    that this class does not know about memfds and caches."""

    def __init__(self, pid: int, lookup: Callable[[int, int], File | None]) -> None:
        self.pid = pid
        self.mm = RemoteMemory(pid)
        self._lookup = lookup
        self._pidfd = -1

    def pidfd(self) -> int:
        if self._pidfd < 0:
            try:
                self._pidfd = syscalls.pidfd_open(self.pid)
            except OSError:
                raise kerr(errno.ESRCH) from None
            os.set_inheritable(self._pidfd, False)
        return self._pidfd

    def close(self) -> None:
        self.mm.close()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def fget(self, fd: int) -> File | None:
        if fd < 0:
            raise kerr(errno.EBADF)
        return self._lookup(self.pid, fd)

    def getfd(self, fd: int) -> int:
        """A reference in the supervisor to the program's fd (pidfd_getfd); EBADF."""
        if fd < 0:
            raise kerr(errno.EBADF)
        try:
            got = syscalls.pidfd_getfd(self.pidfd(), fd)
        except OSError as e:
            raise kerr(errno.EBADF if e.errno in (errno.EBADF, errno.ESRCH) else e.errno) \
                from None
        return got

    def eventfd_get(self, fd: int) -> EventFd:
        got = self.getfd(fd)
        try:
            link = os.readlink(f"/proc/self/fd/{got}")
        except OSError:
            link = ""
        if not is_eventfd(link):
            os.close(got)
            raise kerr(errno.EINVAL)
        return EventFd(got)

    def memlock_limit(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("CapEff:") and int(line.split()[1], 16) & (1 << 14):
                        return None
            with open(f"/proc/{self.pid}/limits") as f:
                for line in f:
                    if line.startswith("Max locked memory"):
                        soft = line[26:].split()[0]
                        return None if soft == "unlimited" else int(soft)
        except (OSError, ValueError, IndexError):
            pass
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        return None if soft == resource.RLIM_INFINITY else soft
