"""The notification loop of `vfiosim run`: answers PROG's system calls from the model.

One thread serves every notification (INTERCEPTION.md §2.3): zero the notif, RECV, dispatch on
the system call number, reply (SEND, or ADDFD with SEND for calls that return a new fd).
Each handler runs with ``machine.lock`` held around the model call (architecture.md §2).

Model files in PROG
    Every open model file (container, group, device, a sysfs ``config``) is one memfd
    installed in PROG's fd window with ADDFD SEND|SETFD.  The supervisor keeps the memfd
    itself (``keep``, to identify the file by inode and to size it for mmap) and hands PROG a
    *second* open file of the same inode, made by opening /proc/self/fd/<keep>.  Then it drops
    its reference to that second file, so PROG (its threads, forks, dups and mmaps) holds the
    only references.

Release semantics (File.release: the last reference to an open file is gone)
    memfds are pseudo files without fsnotify events, but a file opened through
    /proc/self/fd/N is an ordinary open file and reports IN_CLOSE_* to an inotify watch on the
    inode when its *last* reference is dropped (__fput).  The supervisor watches every
    installed inode; the event arrives when the last fd in any process of PROG is closed -- by
    close(), dup2 over it, execve of an O_CLOEXEC fd, process exit, or munmap of the last
    mapping -- and calls ``release()`` under the machine lock.  The event is queued before the
    closing system call returns, so a later call of the same thread (close(group) then
    open(group)) always sees the release: the loop drains inotify before each RECV.  Transient
    references the supervisor takes with pidfd_getfd (dup, read/write positions) are dropped at
    once; if PROG closes the fd meanwhile, the supervisor's close is the last one and reports
    the release itself.

Which file is this fd?
    A cache (tgid, fd) -> installed file, filled on a miss by stat(/proc/TID/fd/FD) (inode),
    emptied on close, close_range, dup2/dup3 into the window, execve and release.  tid ->
    tgid and tgid -> RemoteProcess (its /proc/PID/mem fd) are cached too; a pidfd per thread
    seen, polled with the listener, drops a thread's or process's entries when it exits.

The hot path.  With SYNC_WAKE_UP (or one shared CPU) everything the supervisor does per call
is on PROG's critical path.  Measured on the 2-vCPU test VM, for an emulated GET_API_VERSION
seen by PROG: a minimal C supervisor (RECV, SEND) takes ~5.5 us -- the kernel round trip any
supervisor pays; this loop in Python ~11 us; with the C accelerator ~7.7 us.  The
accelerator (_fastpath.c, built when a compiler and the Python headers exist) makes SEND,
poll() and RECV one call with the GIL released once, and serves an ioctl whose thread,
process and fd are already in the caches below by calling the model's ``obj.ioctl`` itself,
under the machine lock, as sys_ioctl would; everything else returns to the Python loop, which
also runs alone when VFIOSIM_FASTPATH=0.  Both loops poll two fds: the listener, then one
epoll set holding inotify, the exit pidfds, PROG's pidfd and the clock's fds.  The ioctl
argument is one reused RemoteArg; the trace costs one ``is None`` test when off (with a trace
every call goes through Python, which records it).

Device time runs on this thread (devclock.py): events a handler schedules run right after its
reply is sent; delayed ones when the clock's timerfd fires.  No clock thread competes for the
GIL or the machine lock, and an MSI's eventfd write comes from the thread PROG last talked to.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import posixpath
import re
import select
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from vfiosim.kernel.uaccess import kerr
from vfiosim.supervisor import bpf, syscalls
from vfiosim.supervisor.devclock import SupervisorClock
from vfiosim.supervisor.remote import MAX_ARG_READ, RemoteArg, RemoteProcess
from vfiosim.supervisor.sysfs import SysfsDevice
from vfiosim.uapi import seccomp as sc

try:
    from vfiosim.supervisor import _fastpath
except ImportError:  # not built: no C compiler or Python headers at install (setup.py)
    _fastpath = None  # type: ignore[assignment]

IN_CLOSE_WRITE = 0x8
IN_CLOSE_NOWRITE = 0x10
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
F_DUPFD = 0
F_DUPFD_CLOEXEC = 1030
UIO_MAXIOV = 1024
PATH_MAX = 4096

_libc = syscalls.libc
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.restype = ctypes.c_int
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]

_CONFIG_RE = re.compile(r"^/sys/(?:.*/)?([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])/config$")


# struct seccomp_notif: id, pid (TID), flags, data = {nr, arch, instruction_pointer, args[6]}
_NOTIF = struct.Struct("=QIIiIQ6Q")
_RESP = struct.Struct("=QqiI")  # seccomp_notif_resp: id, val, error (-errno), flags
_ADDFD = struct.Struct("=QIIII")  # seccomp_notif_addfd: id, flags, srcfd, newfd, newfd_flags
_U64 = struct.Struct("=Q")


class Notif:
    """The notification being served (one reused instance): ``id``, ``pid`` (the caller's
    TID), ``nr`` and ``args`` (six u64)."""

    __slots__ = ("id", "pid", "nr", "args")

    def __init__(self) -> None:
        self.id = 0
        self.pid = 0
        self.nr = -1
        self.args: tuple[int, ...] = (0,) * 6


class _Cont:
    """Reply: let the kernel run the call (USER_NOTIF_FLAG_CONTINUE)."""


class _Done:
    """Reply already given (ADDFD with SEND, or the caller is gone)."""


CONTINUE = _Cont()
DONE = _Done()


class SysfsConfig:
    """/sys/bus/pci/devices/<BDF>/config, live from the model's config space."""

    kind = "sysfs-config"

    def __init__(self, dev: SysfsDevice) -> None:
        self.dev = dev

    def read(self, proc: Any, count: int, offset: int) -> bytes:
        size = self.dev.config_size
        if offset >= size or count <= 0:
            return b""
        end = min(size, offset + count)
        hw = self.dev.hw
        return bytes(int(hw.cfg_read(o, 1)) & 0xFF for o in range(offset, end))

    def write(self, proc: Any, data: bytes, offset: int) -> int:
        size = self.dev.config_size
        if offset >= size:
            return 0
        data = data[: size - offset]
        for i, b in enumerate(data):
            self.dev.hw.cfg_write(offset + i, 1, b)
        return len(data)

    def ioctl(self, proc: Any, request: int, arg: Any) -> int:
        raise kerr(errno.ENOTTY)

    def mmap(self, proc: Any, offset: int, length: int, prot: int, flags: int) -> None:
        raise kerr(errno.ENODEV)

    def release(self) -> None:
        pass


@dataclass(eq=False)
class Installed:
    obj: Any
    keep: int
    ino: tuple[int, int]
    wd: int
    name: str
    size: int = 0


class Supervisor:
    """Serves one PROG (and all its descendants) from one listener fd."""

    def __init__(self, listener: int, lock: Any, open_model: Callable[[Any, str, int], Any],
                 sysfs_devices: dict[str, SysfsDevice] | None = None,
                 trace: IO[str] | None = None, root_pid: int | None = None,
                 request_names: dict[int, str] | None = None,
                 window: tuple[int, int] = (bpf.WINDOW_LO, bpf.WINDOW_HI),
                 serve_paths: bool = False) -> None:
        self.listener = listener
        self.lock = lock
        self.open_model = open_model
        self.sysfs = sysfs_devices or {}
        self.trace = trace
        self.root_pid = root_pid
        self.root_status: int | None = None
        self.request_names = request_names or {}
        self.lo, self.hi = window
        self.serve_paths = serve_paths
        self.inotify = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.inotify < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.by_ino: dict[tuple[int, int], Installed] = {}
        self.by_wd: dict[int, Installed] = {}
        self.cache: dict[tuple[int, int], Installed] = {}
        self.tgids: dict[int, int] = {}
        self._exit_fds: dict[int, int] = {}  # pidfd -> tid (_watch_exit)
        # Everything serve() waits for besides the listener (inotify, exit pidfds, PROG's
        # pidfd, the clock's fds) sits in one epoll set, so each wait polls two fds: every
        # further fd in a poll() costs ~50 ns per call on the test VM.
        self._ep = select.epoll()
        os.set_inheritable(self._ep.fileno(), False)
        # The C loop (_fastpath.c) when built, unless VFIOSIM_FASTPATH=0 asks for Python.
        self.fastpath = _fastpath is not None and os.environ.get("VFIOSIM_FASTPATH") != "0"
        self._result: Any = None
        self.procs: dict[int, RemoteProcess] = {}
        self.counter = 0
        self.errors = 0
        self._stop = False
        # Preallocated buffers for the listener ioctls, passed to fcntl.ioctl (a builtin:
        # ~5x cheaper than a ctypes call); RECV's buffer is zeroed by slice assignment.
        self._notif_size = max(notif_size(), _NOTIF.size)
        self._buf = bytearray(self._notif_size)
        self._rbuf = bytearray(_RESP.size)
        self._abuf = bytearray(_ADDFD.size)
        self._n = Notif()
        # Device time on this thread (devclock.py), set by run_main when it can adopt the
        # machine clock; None: the clock runs its own thread.
        self.clock_driver: SupervisorClock | None = None
        self.sync_wakeup = False  # SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP set on the listener
        # The ioctl argument, one reused instance (handlers read and write it synchronously
        # and keep no reference); the trace reads its argsz after the call.
        self._last_arg: RemoteArg | None = None
        self._arg = RemoteArg(0, None)  # type: ignore[arg-type]
        n = sc.NR
        self.handlers: dict[int, Callable[[Notif, int], Any]] = {
            n["open"]: self.sys_open, n["openat"]: self.sys_open, n["openat2"]: self.sys_open,
            n["creat"]: self.sys_open,
            n["ioctl"]: self.sys_ioctl, n["pread64"]: self.sys_pread,
            n["pwrite64"]: self.sys_pwrite, n["read"]: self.sys_read,
            n["write"]: self.sys_write, n["readv"]: self.sys_rwv, n["writev"]: self.sys_rwv,
            n["preadv"]: self.sys_rwv, n["pwritev"]: self.sys_rwv,
            n["preadv2"]: self.sys_rwv, n["pwritev2"]: self.sys_rwv,
            n["mmap"]: self.sys_mmap, n["close"]: self.sys_close,
            n["close_range"]: self.sys_close_range, n["dup"]: self.sys_dup,
            n["fcntl"]: self.sys_fcntl, n["dup2"]: self.sys_dup2, n["dup3"]: self.sys_dup2,
            n["execve"]: self.sys_execve, n["execveat"]: self.sys_execve,
            n["fstat"]: self.sys_fstat, n["newfstatat"]: self.sys_fstat,
            n["statx"]: self.sys_fstat,
        }

    # ------------------------------------------------------------------ bookkeeping

    def tgid(self, tid: int) -> int:
        t = self.tgids.get(tid)
        if t is None:
            t = tid
            try:
                with open(f"/proc/{tid}/status", "rb") as f:
                    for line in f:
                        if line.startswith(b"Tgid:"):
                            t = int(line.split()[1])
                            break
            except OSError:
                pass
            self.tgids[tid] = t
            self._watch_exit(tid, t)
        return t

    def _watch_exit(self, tid: int, tgid: int) -> None:
        """A pidfd that becomes readable when ``tid`` exits (the whole process for a leader,
        PIDFD_THREAD for another thread, 6.9+), polled by serve(): then the tid -> tgid entry
        (and for a process its RemoteProcess and fd cache) is dropped before the number can
        be reused.  Without a pidfd the entry stays (a reused tid would be misattributed)."""
        try:
            fd = syscalls.pidfd_open(tid, 0 if tid == tgid else syscalls.PIDFD_THREAD)
        except OSError:
            return
        os.set_inheritable(fd, False)
        self._exit_fds[fd] = tid
        self._poll_add(fd)

    def _exited(self, fd: int) -> None:
        tid = self._exit_fds.pop(fd)
        self._poll_remove(fd)
        os.close(fd)
        tgid = self.tgids.pop(tid, None)
        if tgid != tid:
            return
        for t in [t for t, g in self.tgids.items() if g == tgid]:
            del self.tgids[t]
        self._forget_fd(tgid, 0, 1 << 32)
        p = self.procs.pop(tgid, None)
        if p is not None:
            p.gone()

    def _poll_add(self, fd: int) -> None:
        self._ep.register(fd, select.EPOLLIN)

    def _poll_remove(self, fd: int) -> None:
        self._ep.unregister(fd)

    def _install_result(self, n: Notif, tid: int) -> Any:
        """Complete an ioctl the C loop served whose result is a new file (GET_DEVICE_FD)."""
        obj, self._result = self._result, None
        return self.install(n, self.tgids[tid], obj, True)

    def proc(self, tgid: int) -> RemoteProcess:
        p = self.procs.get(tgid)
        if p is None:
            p = RemoteProcess(tgid, self.lookup_obj)
            self.procs[tgid] = p
        return p

    def lookup(self, tgid: int, fd: int, tid: int | None = None) -> Installed | None:
        """The installed file at fd of tgid; None if fd is open but not ours; EBADF."""
        inst = self.cache.get((tgid, fd))
        if inst is not None:
            return inst
        try:
            st = os.stat(f"/proc/{tid or tgid}/fd/{fd}")
        except FileNotFoundError:
            raise kerr(errno.EBADF) from None
        except OSError:
            return None
        inst = self.by_ino.get((st.st_dev, st.st_ino))
        if inst is not None:
            self.cache[(tgid, fd)] = inst
        return inst

    def lookup_obj(self, tgid: int, fd: int) -> Any:
        inst = self.lookup(tgid, fd)
        return None if inst is None else inst.obj

    def _forget_fd(self, tgid: int, lo: int, hi: int) -> None:
        for key in [k for k in self.cache if k[0] == tgid and lo <= k[1] <= hi]:
            del self.cache[key]

    def install(self, n: Notif, tgid: int, obj: Any, cloexec: bool,
                minfd: int = 0) -> Any:
        """Put a new model file in PROG's fd window; completes the call (ADDFD SEND)."""
        self.counter += 1
        name = f"vfio-{getattr(obj, 'kind', 'file')}-{self.counter}"
        keep = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            give = os.open(f"/proc/self/fd/{keep}", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            os.close(keep)
            raise
        st = os.fstat(keep)
        wd = _libc.inotify_add_watch(self.inotify, f"/proc/self/fd/{keep}".encode(),
                                     IN_CLOSE_WRITE | IN_CLOSE_NOWRITE)
        if wd < 0:
            e = ctypes.get_errno()
            os.close(give)
            os.close(keep)
            raise OSError(e, os.strerror(e))
        inst = Installed(obj, keep, (st.st_dev, st.st_ino), wd, name)
        self.by_ino[inst.ino] = inst
        self.by_wd[wd] = inst
        try:
            r = self._addfd_send(n.id, give, self._free_slot(tgid, minfd), cloexec)
        finally:
            # From here PROG holds the only reference to `give` (or none: then this close
            # is the last one and the release event follows).
            os.close(give)
        return self._added(tgid, inst, r)

    def _added(self, tgid: int, inst: Installed, r: int) -> Any:
        """The outcome of an ADDFD SEND that gave PROG fd ``r`` (or -errno) for ``inst``."""
        if r == -errno.ENOENT:
            return DONE  # the caller is gone: nothing to answer
        if r < 0:
            raise kerr(-r)
        self.cache[(tgid, r)] = inst
        return _Installed(r)

    def _addfd_send(self, nid: int, src: int, slot: int, cloexec: bool) -> int:
        """ADDFD SEND|SETFD: completes the call with fd ``slot``; returns it or -errno."""
        _ADDFD.pack_into(self._abuf, 0, nid,
                         sc.SECCOMP_ADDFD_FLAG_SEND | sc.SECCOMP_ADDFD_FLAG_SETFD, src, slot,
                         os.O_CLOEXEC if cloexec else 0)
        try:
            return fcntl.ioctl(self.listener, sc.SECCOMP_IOCTL_NOTIF_ADDFD, self._abuf, True)
        except OSError as e:
            return -(e.errno or errno.EIO)

    def _free_slot(self, tgid: int, minfd: int) -> int:
        try:
            used = {int(x) for x in os.listdir(f"/proc/{tgid}/fd")}
        except OSError:
            raise kerr(errno.ESRCH) from None
        for fd in range(max(self.lo, minfd), self.hi + 1):
            if fd not in used:
                return fd
        raise kerr(errno.EMFILE)

    def drain_releases(self) -> None:
        while True:
            try:
                buf = os.read(self.inotify, 4096)
            except BlockingIOError:
                return
            pos = 0
            while pos + 16 <= len(buf):
                wd, mask, _cookie, ln = struct.unpack_from("iIII", buf, pos)
                pos += 16 + ln
                inst = self.by_wd.get(wd)
                if inst is None or not mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE):
                    continue
                self._release(inst)

    def _release(self, inst: Installed) -> None:
        self.by_wd.pop(inst.wd, None)
        self.by_ino.pop(inst.ino, None)
        for key in [k for k, v in self.cache.items() if v is inst]:
            del self.cache[key]
        _libc.inotify_rm_watch(self.inotify, inst.wd)
        os.close(inst.keep)
        try:
            with self.lock:
                put = getattr(inst.obj, "put", None)  # model Files: fput(); release at 0
                if put is not None:
                    put()
                else:
                    inst.obj.release()
        except Exception:
            self._report_exception("release")
        if self.trace is not None:
            self._trace({"syscall": "release", "file": inst.name})

    def release_all(self) -> None:
        """PROG is gone: drop every model file still installed (e.g. held by a stray
        process that never closed it), then close the supervisor's own fds."""
        self.drain_releases()
        for inst in list(self.by_wd.values()):
            self._release(inst)
        for p in self.procs.values():
            p.close()
        self.procs.clear()
        for fd in list(self._exit_fds):
            self._exited(fd)
        if self.inotify >= 0:
            os.close(self.inotify)
            self.inotify = -1
        self._ep.close()

    # ------------------------------------------------------------------ the loop

    def stop(self) -> None:
        self._stop = True

    def serve(self, root_pidfd: int = -1) -> None:
        """Serve until no task uses the filter (listener POLLHUP).

        One poll() per notification waits for the listener, the inotify fd (releases), the
        exit pidfds, PROG's pidfd and the clock's fds at once; the common case -- only the
        listener readable -- skips the event loop.  The listener is polled first: poll()
        checks the fds in order, so a release queued before the notification is seen in the
        same poll() (loop.py docstring).

        With the C accelerator (_fastpath.Loop, when built) SEND, poll() and RECV are one call
        with the GIL released once, and an ioctl on a cached model fd is served without
        returning here (the same steps as sys_ioctl); the rest comes back to this loop.
        Without it the same sequence runs here, with fcntl.ioctl and select.poll on
        preallocated buffers.  Either way a reply is sent by the next iteration, or at once
        when device events are due after it."""
        listener = self.listener
        epfd = self._ep.fileno()
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        poller.register(epfd, select.POLLIN)
        drv = self.clock_driver
        recv = sc.SECCOMP_IOCTL_NOTIF_RECV
        send = sc.SECCOMP_IOCTL_NOTIF_SEND
        buf = self._buf
        rbuf = self._rbuf
        loop = None
        if self.fastpath and _fastpath is not None:
            # the trace records every call, so with a trace only the system calls run in C
            loop = _fastpath.Loop(
                listener, send, recv, sc.NR["ioctl"] if self.trace is None else -1,
                self.tgids, self.cache, self.procs, self._arg, self.lock, drv, buf, rbuf)
            loop.others = (epfd,)
        self._poll_add(self.inotify)
        exit_fds = self._exit_fds
        if root_pidfd >= 0:
            self._poll_add(root_pidfd)
        clock_fds: tuple[int, ...] = ()
        if drv is not None:
            clock_fds = (drv.timer_fd, drv.wake_fd)
            for fd in clock_fds:
                self._poll_add(fd)
            if drv.dirty:
                drv.run_due()
        poll = poller.poll
        only_listener = [(listener, select.POLLIN)]
        ioctl = fcntl.ioctl
        zero = bytes(len(buf))
        unpack = _NOTIF.unpack_from
        pack_resp = _RESP.pack_into
        handlers = self.handlers
        n = self._n
        cont_flag = sc.SECCOMP_USER_NOTIF_FLAG_CONTINUE
        reply = False  # a response packed in rbuf, not yet sent
        try:
            while not self._stop:
                handler: Callable[[Notif, int], Any] | None = None
                need_recv = False  # the notification is not in buf yet (Python's RECV)
                if loop is not None:
                    try:
                        r = loop.run(reply, 200)
                    except OSError:
                        raise  # poll() itself failed: a supervisor bug, not PROG's call
                    except Exception:
                        # the model raised serving an ioctl in C; the call is unanswered
                        self._report_exception("ioctl")
                        pack_resp(rbuf, 0, unpack(buf)[0], 0, -errno.EIO, 0)
                        reply = True
                        continue
                    reply = False
                    if r.__class__ is int:
                        if r < 0:
                            continue  # RECV failed: ENOENT, the caller vanished
                        if r == _fastpath.RUN_DIRTY:
                            # served; device events are due after the reply
                            self._send(rbuf)
                            assert drv is not None
                            drv.run_due()
                            continue
                        if r == _fastpath.RUN_RESULT:
                            self._result = loop.take_result()
                            handler = self._install_result
                        events = None
                    else:
                        events = r
                else:
                    if reply:
                        reply = False
                        self._send(rbuf)
                    events = poll(200)
                    if events == only_listener:
                        events = None
                        need_recv = True
                if events is not None:
                    readable = hup = False
                    for fd, ev in events:
                        if fd == listener:
                            if ev & select.POLLIN:
                                readable = True
                            elif ev & (select.POLLHUP | select.POLLERR):
                                hup = True
                            continue
                        for fd, _ in self._ep.poll(0):
                            if fd == root_pidfd:
                                self._reap_root()
                                self._poll_remove(root_pidfd)
                                root_pidfd = -1
                            elif fd in clock_fds:
                                assert drv is not None
                                drv.on_wake()
                            elif fd in exit_fds:
                                self._exited(fd)
                            else:
                                self.drain_releases()
                    if not readable:
                        if hup:
                            return
                        continue
                    need_recv = True
                if need_recv:
                    buf[:] = zero  # zero before RECV (pitfall 1)
                    try:
                        ioctl(listener, recv, buf, True)
                    except OSError:
                        continue  # ENOENT: the caller vanished; EINTR
                u = unpack(buf)
                nid = n.id = u[0]
                n.pid = u[1]
                nr = n.nr = u[3]
                n.args = u[6:]
                if handler is None:
                    handler = handlers.get(nr)
                if handler is None:
                    res: Any = CONTINUE
                else:
                    trace = self.trace
                    t0 = time.perf_counter_ns() if trace is not None else 0
                    try:
                        res = handler(n, u[1])
                    except OSError as e:
                        res = _Err(e.errno or errno.EIO)
                    except Exception:
                        self._report_exception(sc.NAMES.get(nr, str(nr)))
                        res = _Err(errno.EIO)
                    if trace is not None and res is not CONTINUE:
                        self._trace_call(n, t0, res)
                reply = True
                if res.__class__ is int:
                    pack_resp(rbuf, 0, nid, res, 0, 0)
                elif res is CONTINUE:
                    pack_resp(rbuf, 0, nid, 0, 0, cont_flag)
                elif res.__class__ is _Err:
                    pack_resp(rbuf, 0, nid, 0, -res.errno, 0)
                elif res is DONE or res.__class__ is _Installed:
                    reply = False  # answered already
                else:
                    pack_resp(rbuf, 0, nid, 0 if res is None else int(res), 0, 0)
                if drv is not None and drv.dirty:
                    # e.g. the engine a doorbell just scheduled: it runs after the reply
                    if reply:
                        reply = False
                        self._send(rbuf)
                    drv.run_due()
        finally:
            if reply:
                self._send(rbuf)

    def _send(self, rbuf: bytearray) -> None:
        try:
            fcntl.ioctl(self.listener, sc.SECCOMP_IOCTL_NOTIF_SEND, rbuf, True)
        except OSError:
            pass  # ENOENT: the caller died or was interrupted (pitfall 3)

    def _reap_root(self) -> None:
        if self.root_pid is None or self.root_status is not None:
            return
        try:
            pid, status = os.waitpid(self.root_pid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            self.root_status = status


    def _report_exception(self, where: str) -> None:
        self.errors += 1
        if self.errors <= 3:
            sys.stderr.write(f"vfiosim: internal error serving {where} (answered EIO):\n"
                             + traceback.format_exc())
            sys.stderr.flush()

    # ------------------------------------------------------------------ trace

    def _trace(self, rec: dict[str, Any]) -> None:
        assert self.trace is not None
        self.trace.write(json.dumps(rec) + "\n")

    def _trace_call(self, n: Notif, t0: int, res: Any) -> None:
        nr = n.nr
        a = n.args
        err = res.errno if res.__class__ is _Err else 0
        if res.__class__ is _Installed:
            val = res.fd
        elif res.__class__ is int:
            val = res
        else:
            val = 0
        name = sc.NAMES.get(nr, str(nr))
        rec: dict[str, Any] = {"pid": self.tgids.get(n.pid, n.pid), "tid": n.pid,
                               "syscall": name}
        if name in ("open", "openat", "openat2", "creat"):
            rec["path"] = self._last_path
        elif name in ("dup2", "dup3"):
            rec["fd"] = a[0] & 0xFFFFFFFF
        elif name == "mmap":
            rec["fd"] = a[4] & 0xFFFFFFFF
        else:
            rec["fd"] = a[0] & 0xFFFFFFFF
        if name == "ioctl":
            req = a[1] & 0xFFFFFFFF
            rec["request"] = self.request_names.get(req, f"{req:#x}")
            rec["argsz"] = self._last_arg.argsz if self._last_arg is not None else None
        rec["result"] = None if err else val
        rec["errno"] = errno.errorcode.get(err, str(err)) if err else None
        rec["duration_us"] = round((time.perf_counter_ns() - t0) / 1000, 3)
        self._trace(rec)

    _last_path: str | None = None

    # ------------------------------------------------------------------ handlers

    def _read_path(self, proc: RemoteProcess, addr: int) -> str:
        out = bytearray()
        while len(out) < PATH_MAX:
            chunk = 4096 - (addr % 4096)
            data = proc.mm.read(addr, chunk)
            i = data.find(b"\0")
            if i >= 0:
                out += data[:i]
                return os.fsdecode(bytes(out))
            out += data
            addr += chunk
        raise kerr(errno.ENAMETOOLONG)

    def sys_open(self, n: Notif, tid: int) -> Any:
        nr = n.nr
        a = n.args
        tgid = self.tgid(tid)
        proc = self.proc(tgid)
        if nr == sc.NR["open"]:
            dirfd, paddr, flags = AT_FDCWD, a[0], a[1]
        elif nr == sc.NR["creat"]:
            dirfd, paddr, flags = AT_FDCWD, a[0], os.O_CREAT | os.O_WRONLY | os.O_TRUNC
        else:
            dirfd = ctypes.c_int32(a[0] & 0xFFFFFFFF).value
            paddr = a[1]
            flags = a[2]
            if nr == sc.NR["openat2"]:
                if a[3] < 24:
                    return CONTINUE  # the kernel answers EINVAL
                flags = int.from_bytes(proc.mm.read(a[2], 8), "little")
        try:
            path = self._read_path(proc, paddr)
        except OSError:
            return CONTINUE  # the kernel reports EFAULT / ENAMETOOLONG itself
        self._last_path = path
        if not path.startswith("/"):
            base = "cwd" if dirfd == AT_FDCWD else f"fd/{dirfd}"
            try:
                path = os.readlink(f"/proc/{tid}/{base}") + "/" + path
            except OSError:
                return CONTINUE
        path = "/" + posixpath.normpath(path).lstrip("/")
        self._last_path = path
        flags &= 0xFFFFFFFF
        if path.startswith("/dev/vfio/"):
            if not self._valid(n):
                return DONE
            with self.lock:
                obj = self.open_model(proc, path, flags)
            return self.install(n, tgid, obj, bool(flags & os.O_CLOEXEC))
        if path.startswith("/sys/"):
            m = _CONFIG_RE.match(path)
            if m and m.group(1) in self.sysfs:
                return self.install(n, tgid, SysfsConfig(self.sysfs[m.group(1)]),
                                    bool(flags & os.O_CLOEXEC))
            if path.startswith("/sys/kernel/debug/iommu"):
                raise kerr(errno.ENOENT)
        if self.serve_paths and path == "/dev/vfio":
            raise kerr(errno.ENOENT)
        return CONTINUE

    def _valid(self, n: Notif) -> bool:
        try:
            fcntl.ioctl(self.listener, sc.SECCOMP_IOCTL_NOTIF_ID_VALID,
                        bytearray(_U64.pack(n.id)), True)
        except OSError:
            return False
        return True

    def _target(self, n: Notif, tid: int, argi: int = 0
                ) -> tuple[int, Installed | None]:
        tgid = self.tgids.get(tid)
        if tgid is None:
            tgid = self.tgid(tid)
        fd = n.args[argi] & 0xFFFFFFFF
        inst = self.cache.get((tgid, fd))
        if inst is None:
            inst = self.lookup(tgid, fd, tid)
        return tgid, inst

    def sys_ioctl(self, n: Notif, tid: int) -> Any:
        """The hot path: cached tid -> tgid, (tgid, fd) -> file and tgid -> process; the
        argument is read lazily by the model (one pread of /proc/PID/mem per struct)."""
        a = n.args
        tgid = self.tgids.get(tid)
        if tgid is None:
            tgid = self.tgid(tid)
        inst = self.cache.get((tgid, a[0] & 0xFFFFFFFF))
        if inst is None:
            inst = self.lookup(tgid, a[0] & 0xFFFFFFFF, tid)
            if inst is None:
                return CONTINUE
        proc = self.procs.get(tgid)
        if proc is None:
            proc = self.proc(tgid)
        arg = self._last_arg = self._arg
        arg.value = a[2]
        arg.mm = proc.mm
        arg.argsz = None
        with self.lock:
            r = inst.obj.ioctl(proc, a[1] & 0xFFFFFFFF, arg)
        if r.__class__ is int or isinstance(r, int):
            return r
        return self.install(n, tgid, r, True)

    def _pos_read(self, proc: RemoteProcess, inst: Installed, fd: int, offset: int | None,
                  chunks: list[tuple[int, int]], write: bool) -> int:
        """Move data between the model file and PROG buffers (addr, len) at offset, or at
        and advancing the file position when offset is None."""
        src = -1
        if offset is None:
            src = proc.getfd(fd)
            offset = os.lseek(src, 0, os.SEEK_CUR)
        try:
            if offset < 0:
                raise kerr(errno.EINVAL)
            done = 0
            for addr, ln in chunks:
                ln = min(ln, MAX_ARG_READ - done)
                if ln <= 0:
                    break
                if write:
                    data = proc.mm.read(addr, ln)
                    with self.lock:
                        got = int(inst.obj.write(proc, data, offset + done))
                else:
                    with self.lock:
                        data = inst.obj.read(proc, ln, offset + done)
                    got = len(data)
                    if got:
                        proc.mm.write(addr, data)
                done += got
                if got < ln:
                    break
            if src >= 0 and done:
                os.lseek(src, offset + done, os.SEEK_SET)
            return done
        finally:
            if src >= 0:
                os.close(src)

    def sys_pread(self, n: Notif, tid: int) -> Any:
        """pread64 on a model fd: one model read, one write into PROG (region accesses and
        doorbells take this path, so it skips _pos_read's generality)."""
        tgid, inst = self._target(n, tid)
        if inst is None:
            return CONTINUE
        a = n.args
        off = a[3] - (1 << 64) if a[3] >> 63 else a[3]
        if off < 0:
            raise kerr(errno.EINVAL)
        ln = a[2] if a[2] < MAX_ARG_READ else MAX_ARG_READ
        if ln == 0:
            return 0
        proc = self.procs.get(tgid) or self.proc(tgid)
        with self.lock:
            data = inst.obj.read(proc, ln, off)
        if data:
            proc.mm.write(a[1], data)
        return len(data)

    def sys_pwrite(self, n: Notif, tid: int) -> Any:
        """pwrite64 on a model fd: one pread of the caller's buffer, one model write."""
        tgid, inst = self._target(n, tid)
        if inst is None:
            return CONTINUE
        a = n.args
        off = a[3] - (1 << 64) if a[3] >> 63 else a[3]
        if off < 0:
            raise kerr(errno.EINVAL)
        ln = a[2] if a[2] < MAX_ARG_READ else MAX_ARG_READ
        if ln == 0:
            return 0
        proc = self.procs.get(tgid) or self.proc(tgid)
        data = proc.mm.read(a[1], ln)
        with self.lock:
            return int(inst.obj.write(proc, data, off))

    def _read_write(self, n: Notif, tid: int, write: bool) -> Any:
        """read(2)/write(2) at the file position of a model fd."""
        tgid, inst = self._target(n, tid)
        if inst is None:
            return CONTINUE
        a = n.args
        return self._pos_read(self.proc(tgid), inst, a[0] & 0xFFFFFFFF, None,
                              [(a[1], a[2])], write)

    def sys_read(self, n: Notif, tid: int) -> Any:
        return self._read_write(n, tid, False)

    def sys_write(self, n: Notif, tid: int) -> Any:
        return self._read_write(n, tid, True)

    def sys_rwv(self, n: Notif, tid: int) -> Any:
        tgid, inst = self._target(n, tid)
        if inst is None:
            return CONTINUE
        nr = n.nr
        a = n.args
        proc = self.proc(tgid)
        cnt = a[2] & 0xFFFFFFFF
        if cnt > UIO_MAXIOV:
            raise kerr(errno.EINVAL)
        raw = proc.mm.read(a[1], 16 * cnt)
        chunks = [struct.unpack_from("QQ", raw, 16 * i) for i in range(cnt)]
        write = nr in (sc.NR["writev"], sc.NR["pwritev"], sc.NR["pwritev2"])
        offset: int | None
        if nr in (sc.NR["readv"], sc.NR["writev"]):
            offset = None
        else:
            offset = ctypes.c_int64(a[3]).value
            if nr in (sc.NR["preadv2"], sc.NR["pwritev2"]) and offset == -1:
                offset = None
        return self._pos_read(proc, inst, a[0] & 0xFFFFFFFF, offset, chunks, write)

    def sys_mmap(self, n: Notif, tid: int) -> Any:
        tgid, inst = self._target(n, tid, 4)
        if inst is None:
            return CONTINUE
        a = n.args
        length, prot, flags, off = a[1], a[2] & 0xFFFFFFFF, a[3] & 0xFFFFFFFF, a[5]
        with self.lock:
            inst.obj.mmap(self.proc(tgid), off, length, prot, flags)
        end = off + length
        if end > inst.size:
            # Sparse: the shared mapping PROG gets is backed by the memfd (INTERCEPTION §2.9).
            os.ftruncate(inst.keep, end)
            inst.size = end
        return CONTINUE

    def sys_close(self, n: Notif, tid: int) -> Any:
        self.cache.pop((self.tgid(tid), n.args[0] & 0xFFFFFFFF), None)
        return CONTINUE

    def sys_close_range(self, n: Notif, tid: int) -> Any:
        a = n.args
        self._forget_fd(self.tgid(tid), a[0] & 0xFFFFFFFF, a[1] & 0xFFFFFFFF)
        return CONTINUE

    def sys_dup2(self, n: Notif, tid: int) -> Any:
        self.cache.pop((self.tgid(tid), n.args[1] & 0xFFFFFFFF), None)
        return CONTINUE

    def _dup(self, n: Notif, tid: int, minfd: int, cloexec: bool) -> Any:
        tgid, inst = self._target(n, tid)
        if inst is None:
            return CONTINUE
        proc = self.proc(tgid)
        src = proc.getfd(n.args[0] & 0xFFFFFFFF)
        try:
            r = self._addfd_send(n.id, src, self._free_slot(tgid, minfd), cloexec)
        finally:
            os.close(src)
        return self._added(tgid, inst, r)

    def sys_dup(self, n: Notif, tid: int) -> Any:
        return self._dup(n, tid, 0, False)

    def sys_fcntl(self, n: Notif, tid: int) -> Any:
        cmd = n.args[1] & 0xFFFFFFFF
        if cmd not in (F_DUPFD, F_DUPFD_CLOEXEC):
            return CONTINUE
        minfd = ctypes.c_int64(n.args[2]).value
        if minfd < 0:
            raise kerr(errno.EINVAL)
        if minfd > self.hi:
            return CONTINUE
        return self._dup(n, tid, minfd, cmd == F_DUPFD_CLOEXEC)

    def sys_execve(self, n: Notif, tid: int) -> Any:
        tgid = self.tgid(tid)
        self._forget_fd(tgid, 0, 1 << 32)
        p = self.procs.get(tgid)
        if p is not None:
            p.mm.reopen()
        return CONTINUE

    def sys_fstat(self, n: Notif, tid: int) -> Any:
        """fstat of a container or group fd shows a character device, like /dev/vfio/*."""
        a = n.args
        nr = n.nr
        if nr != sc.NR["fstat"]:
            flags = a[3] & 0xFFFFFFFF if nr == sc.NR["newfstatat"] else a[2] & 0xFFFFFFFF
            if not flags & AT_EMPTY_PATH:
                return CONTINUE
            proc = self.proc(self.tgid(tid))
            try:
                if proc.mm.read(a[1], 1) != b"\0":
                    return CONTINUE
            except OSError:
                return CONTINUE
        tgid, inst = self._target(n, tid)
        if inst is None or getattr(inst.obj, "kind", "") not in ("container", "group"):
            return CONTINUE
        number = getattr(inst.obj, "number", None)
        if inst.obj.kind == "container" or number is None:
            mode, rdev = 0o20666, os.makedev(10, 196)
        else:
            mode, rdev = 0o20600, os.makedev(243, int(number))
        st = os.fstat(inst.keep)
        proc = self.proc(tgid)
        if nr == sc.NR["statx"]:
            buf = bytearray(256)
            struct.pack_into("IIQIIIHxxQQQQ", buf, 0, 0x7FF, 4096, 0, 1, 0, 0, mode, st.st_ino,
                             0, 0, 0)
            for off, t in ((64, st.st_atime_ns), (80, st.st_mtime_ns), (96, st.st_ctime_ns),
                           (112, st.st_mtime_ns)):
                struct.pack_into("qI", buf, off, t // 10**9, t % 10**9)
            struct.pack_into("II", buf, 128, os.major(rdev), os.minor(rdev))
            struct.pack_into("II", buf, 136, os.major(st.st_dev), os.minor(st.st_dev))
            proc.mm.write(a[4], bytes(buf))
            return 0
        buf = bytearray(144)
        struct.pack_into("QQQIIIxxxxQqqq", buf, 0, st.st_dev, st.st_ino, 1, mode, 0, 0, rdev,
                         0, 4096, 0)
        for off, t in ((72, st.st_atime_ns), (88, st.st_mtime_ns), (104, st.st_ctime_ns)):
            struct.pack_into("qq", buf, off, t // 10**9, t % 10**9)
        proc.mm.write(a[1] if nr == sc.NR["fstat"] else a[2], bytes(buf))
        return 0


@dataclass(frozen=True)
class _Installed:
    fd: int


class _Err:
    """Reply: fail the call with errno."""

    __slots__ = ("errno",)

    def __init__(self, err: int) -> None:
        self.errno = err


def set_sync_wakeup(listener: int) -> bool:
    """SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (6.6+); False where the kernel lacks it.  The flag
    is passed by value (INTERCEPTION §4)."""
    try:
        fcntl.ioctl(listener, sc.SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                    sc.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
    except OSError:
        return False
    return True


def notif_size() -> int:
    """sizeof(struct seccomp_notif) of the running kernel (SECCOMP_GET_NOTIF_SIZES)."""
    try:
        return int(syscalls.notif_sizes().seccomp_notif)
    except OSError:
        return _NOTIF.size
