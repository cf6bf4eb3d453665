"""The traced program as the request handlers see it: RemoteProcess, RemoteMemory, RemoteArg.

Implements the Process / UserMemory / UserArg protocols of :mod:`vfiosim.kernel.uaccess` for
a thread group of the program run under `vfiosim run`:

* argument structs are read once from ``/proc/TGID/mem`` (fast for small reads; reopened after
  execve, pitfall 13); a short read is EFAULT;
* everything written back goes through process_vm_writev, which honours page protection
  (pitfall 12); device DMA reads of up to 64 KiB (descriptors) are preads of the same fd,
  larger ones and all DMA writes are process_vm_readv/writev through a reusable bounce
  buffer (one foreign call per transfer, no per-call ctypes objects);
* eventfds named in SET_IRQS are fetched with pidfd_getfd (INTERCEPTION.md §2.7);
* one argument read is capped at :data:`MAX_ARG_READ` bytes: a hostile ``argsz`` or count
  cannot make the supervisor copy gigabytes (the read fails with E2BIG instead).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import resource
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vfiosim.kernel.uaccess import (
    EventFd,
    check_maps,
    is_eventfd,
    kerr,
    smaps_page_size,
)
from vfiosim.supervisor import syscalls

if TYPE_CHECKING:
    from vfiosim.kernel.vfio_main import File

MAX_ARG_READ = 1 << 20


class _Bounce:
    """A reusable local buffer and iovec array for process_vm_readv/writev.

    The iovec array holds the local iovec at index 0 and up to :data:`MAX_RIOV` remote
    iovecs after it; both are packed with struct.pack_into, so a transfer costs one foreign
    call and no per-call ctypes objects.  ``lock`` is taken without blocking: a second thread
    that finds it busy uses a private buffer instead (DMA from the clock thread may overlap a
    reply written by the supervisor thread)."""

    KEEP = 4 << 20  # buffers up to this size are kept for the next transfer

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.size = 0
        self.addr = 0
        self.view = memoryview(b"")
        self._buf: mmap.mmap | None = None
        self._iov = (ctypes.c_char * (16 * (1 + MAX_RIOV)))()
        self.iov_addr = ctypes.addressof(self._iov)
        self.iov_view = memoryview(self._iov).cast("B")

    def ensure(self, size: int) -> None:
        if size > self.size:
            # Page-aligned (an anonymous mmap): process_vm_readv/writev with a local buffer
            # at a page offset (malloc's +16) ran ~3x slower on the 6.18 test VM.
            cap = max(4096, 1 << (size - 1).bit_length())
            buf = mmap.mmap(-1, cap)
            self.addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
            self.view = memoryview(buf)
            if cap <= self.KEEP:
                self._buf, self.size = buf, cap
            else:  # huge: used once, not kept
                self._buf, self.size = buf, 0


MAX_RIOV = 1024  # UIO_MAXIOV
_IOV = struct.Struct("=QQ")
_pack_iov = _IOV.pack_into
_readv = syscalls.process_vm_readv
_writev = syscalls.process_vm_writev


def _xfer(fn: Any, pid: int, b: _Bounce, local_off: int, remote: int, size: int,
          split: bool) -> None:
    """One process_vm_readv/writev between b's buffer at local_off and [remote, +size);
    EFAULT unless every byte moved.  ``split``: remote iovecs end at page boundaries, so a
    fault stops the transfer at the first bad page (copy_to_user's partial semantics)."""
    if remote < 0 or remote + size > 1 << 64:
        raise kerr(errno.EFAULT)
    iv = b.iov_view
    if not split or (remote & 4095) + size <= 4096:
        _pack_iov(iv, 0, b.addr + local_off, size)
        _pack_iov(iv, 16, remote, size)
        if fn(pid, b.iov_addr, 1, b.iov_addr + 16, 1, 0) != size:
            raise kerr(errno.EFAULT)
        return
    done = 0
    while done < size:
        pos = remote + done
        end = min(remote + size, (pos & ~4095) + MAX_RIOV * 4096)
        n = end - pos
        _pack_iov(iv, 0, b.addr + local_off + done, n)
        cnt = 0
        while pos < end:
            nxt = min((pos & ~4095) + 4096, end)
            cnt += 1
            _pack_iov(iv, 16 * cnt, pos, nxt - pos)
            pos = nxt
        if fn(pid, b.iov_addr, 1, b.iov_addr + 16, cnt, 0) != n:
            raise kerr(errno.EFAULT)
        done += n


class RemoteMemory:
    """The address space of thread group ``pid`` (UserMemory and DmaMemory protocols).

    Small reads (arguments, descriptors) are one pread of a cached /proc/PID/mem fd; writes
    and large transfers are one process_vm_readv/writev through a reusable bounce buffer."""

    SMALL = 64 * 1024

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._mem = -1
        self._bounce = _Bounce()

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

    def _take(self) -> tuple[_Bounce, bool]:
        b = self._bounce
        if b.lock.acquire(False):
            return b, True
        return _Bounce(), False

    def read(self, addr: int, size: int) -> bytes:
        if size <= 0:
            return b""
        if addr < 0 or addr + size > 0x7FFF_FFFF_FFFF_FFFF:
            raise kerr(errno.EFAULT)
        if size > self.SMALL:
            return self._read_large(addr, size)
        mem = self._mem
        if mem < 0:
            mem = self._memfd()
        try:
            data = os.pread(mem, size, addr)
        except OSError:
            raise kerr(errno.EFAULT) from None
        if len(data) != size:
            raise kerr(errno.EFAULT)
        return data

    def _read_large(self, addr: int, size: int) -> bytes:
        b, owned = self._take()
        try:
            b.ensure(size)
            _xfer(_readv, self.pid, b, 0, addr, size, False)
            return bytes(b.view[:size])
        finally:
            if owned:
                b.lock.release()

    def _write(self, addr: int, data: bytes | bytearray | memoryview, split: bool) -> None:
        size = len(data)
        if size == 0:
            return
        b, owned = self._take()
        try:
            b.ensure(size)
            b.view[:size] = data
            _xfer(_writev, self.pid, b, 0, addr, size, split)
        finally:
            if owned:
                b.lock.release()

    def write(self, addr: int, data: bytes) -> None:
        self._write(addr, data, True)

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
        return self.read(addr, size)

    def dma_write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        self._write(addr, memoryview(data).cast("B"), False)

    def copy(self, dst: int, src: int, size: int) -> None:
        """Device copy inside this mm: one process_vm_readv into the bounce buffer, one
        process_vm_writev out of it (memmove semantics: the whole source is read first)."""
        if size <= 0:
            return
        b, owned = self._take()
        try:
            b.ensure(size)
            _xfer(_readv, self.pid, b, 0, src, size, False)
            _xfer(_writev, self.pid, b, 0, dst, size, False)
        finally:
            if owned:
                b.lock.release()


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

    def gone(self) -> None:
        """The thread group exited: close its fds and answer every later access with
        EFAULT/ESRCH (pid -1), so that a reused pid never reaches another process."""
        self.close()
        self.pid = self.mm.pid = -1

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
        # Naming the client's fd lets the sanitizer tell a closed eventfd from a forgotten one.
        return EventFd(got, client_pid=self.pid, client_fd=fd)

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
