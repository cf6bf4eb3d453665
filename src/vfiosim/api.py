"""The in-process Kernel API.  SPEC §12.1 [decision D11, D14].

::

    k = vfiosim.Kernel.from_preset("p4080")
    fd = k.open("/dev/vfio/vfio", os.O_RDWR)
    ret = k.ioctl(fd, request, arg)        # arg: int, or a writable buffer updated in place
    data = k.pread(fd, n, offset); k.pwrite(fd, data, offset); k.close(fd)

fds returned by :meth:`Kernel.open` and VFIO_GROUP_GET_DEVICE_FD are numbers in this object's
own table (Appendix A #26); eventfds are real OS fds.  Every call holds the machine lock, so
device work on the machine clock never interleaves with a handler.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from vfiosim.kernel.sanitizer import SanitizerReport
from vfiosim.kernel.uaccess import BufferArg, IntArg, LocalProcess, kerr
from vfiosim.kernel.vfio_main import File, VfioCore
from vfiosim.machine import Machine, MachineSpec, load_machine_file, load_preset

O_ACCMODE = 3


@dataclass(frozen=True)
class DeviceInfo:
    """One simulated device, as ``k.devices()`` lists it (SPEC §12.1)."""

    name: str
    group: int
    vendor: int
    device: int
    driver: str
    model: str


class Kernel:
    """A simulated machine and the kernel serving its /dev/vfio, driven in-process."""

    def __init__(self, spec: MachineSpec, **options: Any) -> None:
        self.machine = Machine(spec, **options)
        self.core = VfioCore(self.machine)
        self._fds: dict[int, File] = {}
        self.process = LocalProcess(self._fds)
        self._trace: IO[str] | None = None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **options: Any) -> Kernel:
        """Build preset ``name`` ("x86", "p4080", "t4240"); options override its defaults."""
        return cls(load_preset(name), **options)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **options: Any) -> Kernel:
        """Build the machine a TOML machine file describes."""
        return cls(load_machine_file(path), **options)

    def shutdown(self) -> None:
        """Close every fd and stop the machine clock."""
        with self.machine.lock:
            for fd in sorted(self._fds):
                self._drop(fd)
        self.machine.shutdown()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- tracing --------------------------------------------------------------------------------
    def trace_to(self, out: IO[str] | None) -> None:
        """Write one JSON object per call to ``out`` (None stops).  The records have the shape
        ``vfiosim run --trace`` writes: pid, tid, syscall, fd or path, request and argsz for
        ioctls, result, errno, duration_us."""
        self._trace = out

    def _record(self, rec: dict[str, Any], t0: int, result: Any, err: OSError | None) -> None:
        assert self._trace is not None
        rec = {"pid": self.process.pid, "tid": threading.get_native_id(), **rec}
        rec["result"] = None if err else result
        rec["errno"] = (errno.errorcode.get(err.errno or 0, str(err.errno)) if err else None)
        rec["duration_us"] = round((time.perf_counter_ns() - t0) / 1000, 3)
        self._trace.write(json.dumps(rec) + "\n")

    def _traced(self, rec: dict[str, Any], fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            ret = fn(*args)
        except OSError as e:
            self._record(rec, t0, None, e)
            raise
        self._record(rec, t0, ret if isinstance(ret, int) else len(ret), None)
        return ret

    def _request_name(self, fd: int, request: int) -> str:
        from vfiosim.uapi.vfio import ioctl_name

        f = self._fds.get(fd)
        if f is None:
            return f"{request:#x}"
        # A machine has one backend, so a container's backend ioctls are named after it even
        # before SET_IOMMU (when the call fails with EINVAL).
        return ioctl_name(request & 0xFFFF_FFFF, f.kind, self.machine.kind)

    # -- discovery ------------------------------------------------------------------------------
    def devices(self) -> list[DeviceInfo]:
        return [DeviceInfo(d.name, d.group, d.vendor, d.device, d.driver, d.model)
                for d in self.machine.devices]

    def groups(self) -> list[int]:
        return sorted(self.machine.groups)

    # -- system calls ---------------------------------------------------------------------------
    def _install(self, f: File) -> int:
        fd = 3
        while fd in self._fds:
            fd += 1
        self._fds[fd] = f
        return fd

    def _file(self, fd: int) -> File:
        f = self._fds.get(fd) if isinstance(fd, int) else None
        if f is None:
            raise kerr(errno.EBADF)
        return f

    def open(self, path: str | os.PathLike[str], flags: int = os.O_RDWR) -> int:
        """open(2) of /dev/vfio/vfio or /dev/vfio/<group>; read-only opens are accepted as the
        kernel accepts them (the ioctls check nothing about the open mode)."""
        if self._trace is not None:
            return self._traced({"syscall": "openat", "path": os.fspath(path)}, self._open,
                                path, flags)
        return self._open(path, flags)

    def _open(self, path: str | os.PathLike[str], flags: int) -> int:
        path = os.fspath(path)
        with self.machine.lock:
            f = self.core.open(self.process, os.path.normpath(path) if path else path, flags)
            return self._install(f)

    def ioctl(self, fd: int, request: int, arg: Any = 0) -> int:
        """ioctl(2).  ``arg`` is an int (a value, or an address in this process) or a buffer
        the call reads and updates in place."""
        if self._trace is not None:
            name = self._request_name(fd, request)
            rec = {"syscall": "ioctl", "fd": fd, "request": name}
            # Structs that start with argsz: every VFIO ioctl argument but these two.
            if not isinstance(arg, int) and name not in ("VFIO_GROUP_SET_CONTAINER",
                                                         "VFIO_GROUP_GET_DEVICE_FD"):
                rec["argsz"] = int.from_bytes(bytes(memoryview(arg).cast("B")[:4]), "little")
            return self._traced(rec, self._ioctl, fd, request, arg)
        return self._ioctl(fd, request, arg)

    def _ioctl(self, fd: int, request: int, arg: Any) -> int:
        a = IntArg(arg, self.process.mm) if isinstance(arg, int) else BufferArg(arg)
        with self.machine.lock:
            f = self._file(fd)
            ret = f.ioctl(self.process, request & 0xFFFF_FFFF, a)
            if isinstance(ret, File):
                return self._install(ret)
            return ret

    def pread(self, fd: int, count: int, offset: int) -> bytes:
        if self._trace is not None:
            return self._traced({"syscall": "pread64", "fd": fd, "count": count,
                                 "offset": offset}, self._pread, fd, count, offset)
        return self._pread(fd, count, offset)

    def _pread(self, fd: int, count: int, offset: int) -> bytes:
        if count < 0 or offset < 0:
            raise kerr(errno.EINVAL)
        with self.machine.lock:
            return self._file(fd).read(self.process, count, offset)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        if self._trace is not None:
            return self._traced({"syscall": "pwrite64", "fd": fd, "count": len(data),
                                 "offset": offset}, self._pwrite, fd, data, offset)
        return self._pwrite(fd, data, offset)

    def _pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        if offset < 0:
            raise kerr(errno.EINVAL)
        with self.machine.lock:
            return self._file(fd).write(self.process, bytes(data), offset)

    def mmap(self, fd: int, length: int, offset: int = 0, prot: int = 3, flags: int = 1) -> Any:
        """mmap(2) of a model fd: the region description where the file allows it (with the
        ``bar_mmap`` option), else the kernel's errno (ENODEV, EINVAL)."""
        with self.machine.lock:
            return self._file(fd).mmap(self.process, offset, length, prot, flags)

    def close(self, fd: int) -> None:
        if self._trace is not None:
            self._traced({"syscall": "close", "fd": fd}, self._close, fd)
            return
        self._close(fd)

    def _close(self, fd: int) -> int:
        with self.machine.lock:
            self._file(fd)
            self._drop(fd)
        return 0

    def _drop(self, fd: int) -> None:
        f = self._fds.pop(fd)
        f.put()

    # -- device time (SPEC §12.1) ----------------------------------------------------------------
    def advance(self, ns: int) -> int:
        """Manual clock: advance device time by ``ns`` and run what falls due; returns the
        number of events run.  (With the real clock device work runs on its own.)"""
        return self.machine.clock.advance(ns)

    def run_until_idle(self, limit_ns: int | None = None) -> int:
        """Manual clock: run device work until nothing is pending (or ``limit_ns`` passes)."""
        return self.machine.clock.run_until_idle(limit_ns)

    # -- introspection --------------------------------------------------------------------------
    def fd_kind(self, fd: int) -> str:
        return self._file(fd).kind

    def dump(self) -> dict[str, Any]:
        """A snapshot of the model's state (SPEC §12.1 introspection)."""
        from vfiosim.dump import dump_kernel

        with self.machine.lock:
            return dump_kernel(self)

    @property
    def faults(self) -> list[Any]:
        return self.machine.faults

    @property
    def events(self) -> list[str]:
        return self.machine.events

    @property
    def warnings(self) -> list[str]:
        """The sanitizer reports' messages (SPEC §13.8)."""
        return self.machine.warnings

    def sanitizer_reports(self, kind: str | None = None) -> list[SanitizerReport]:
        """The sanitizer's reports, oldest first; only those of ``kind`` if given (the kinds:
        ``vfiosim.kernel.sanitizer.KINDS``).  SPEC §13.8."""
        with self.machine.lock:
            return [r for r in self.machine.sanitizer if kind is None or r.kind == kind]
