"""`vfiosim run`: serve /dev/vfio and its sysfs to an unmodified program (SPEC §12.3).

:func:`run_main` is what the CLI calls.  The pieces: :mod:`.bpf` (the fd-window filter),
:mod:`.launcher` (fork, namespace, filter, exec), :mod:`.loop` (the notification loop and the
handlers), :mod:`.remote` (the traced process as the request handlers see it), :mod:`.sysfs`
(the generated /sys and /dev/vfio tree).  Design notes: loop.py's docstring (fds, release
semantics), INTERCEPTION.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
from typing import Any

DEFAULT_MACHINE = "x86"
MIN_KERNEL = (5, 19)
PIN_ENV = "VFIOSIM_RUN_PIN"  # "0": keep the inherited CPU affinity (see pin_one_cpu)


def _err(msg: str) -> None:
    sys.stderr.write(f"vfiosim: {msg}\n")
    sys.stderr.flush()


def host_supported() -> str | None:
    """None if this host can run `vfiosim run`, else the reason."""
    from vfiosim.supervisor.syscalls import kernel_version

    arch = os.uname().machine  # platform.machine() without importing platform
    ver = kernel_version()
    if arch != "x86_64" or ver < MIN_KERNEL:
        return (f"run needs Linux >= {MIN_KERNEL[0]}.{MIN_KERNEL[1]} on x86_64 (seccomp user "
                f"notification with WAIT_KILLABLE_RECV); this host is Linux "
                f"{os.uname().release} on {arch}")
    return None


def pin_one_cpu() -> set[int] | None:
    """Pin the calling thread -- and so PROG, forked from it, and every thread it starts --
    to the CPU it runs on.  Returns the previous affinity (to restore), or None if nothing
    was changed (one CPU allowed already, or ``VFIOSIM_RUN_PIN=0``).

    Why: in a VM every wake-up of a task on another, idle vCPU costs an IPI and a VM exit
    (INTERCEPTION §2.3, pitfall 16).  SYNC_WAKE_UP keeps the system-call round trip on one
    CPU, but an MSI is an eventfd write that wakes PROG wherever it last ran: measured on the
    2-vCPU test VM, device MSI -> PROG's poll() wake-up 42-50 us unpinned, 19-22 us pinned,
    and a 1 MiB dmacopy doorbell -> completion 590 us unpinned, 415 us pinned.  The cost: PROG
    and the model share one CPU (PROG can widen its own affinity again)."""
    if os.environ.get(PIN_ENV, "1") == "0":
        return None
    try:
        old = os.sched_getaffinity(0)
    except OSError:
        return None
    if len(old) <= 1:
        return None
    from vfiosim.supervisor.syscalls import libc

    cpu = int(libc.sched_getcpu())
    if cpu not in old:
        cpu = min(old)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    return old


def load_kernel(machine: str | None) -> Any:
    """The model for --machine: a preset name, or a TOML machine file."""
    from vfiosim.api import Kernel

    name = machine or DEFAULT_MACHINE
    if os.path.sep in name or name.endswith(".toml") or os.path.isfile(name):
        return Kernel.from_file(name)
    return Kernel.from_preset(name)


def request_names() -> dict[int, str]:
    names: dict[int, str] = {}
    for modname in ("vfiosim.uapi.vfio", "vfiosim.uapi.vfio_pamu"):
        try:
            mod = __import__(modname, fromlist=["_"])
        except ImportError:
            continue
        for k, v in vars(mod).items():
            if k.startswith("VFIO_") and isinstance(v, int) and (v >> 8) & 0xFF == 0x3B \
                    and v > 0xFF:
                names[v] = names[v] + "|" + k if v in names else k
    return names


def run_main(argv_after_dashdash: list[str], machine: str | None, trace: str | None,
             kernel: Any = None) -> int:
    """Run PROG under the model; returns PROG's exit status (128 + N if killed by signal N),
    2 on a usage, machine-file or host error, 127 if PROG cannot be found.

    ``kernel`` (tests) serves an already built Kernel instead of loading ``machine``."""
    reason = host_supported()
    if reason:
        _err(reason)
        return 2
    if not argv_after_dashdash:
        _err("run needs a program: vfiosim run [--machine M] -- PROG [ARGS...]")
        return 2
    prog = argv_after_dashdash[0]
    path = prog if "/" in prog else shutil.which(prog)
    if path is None or not os.path.exists(path):
        _err(f"{prog}: command not found")
        return 127
    own_kernel = kernel is None
    if own_kernel:
        try:
            kernel = load_kernel(machine)
        except (ValueError, OSError) as e:
            where = machine or DEFAULT_MACHINE
            text = str(e)
            _err(text if where in text else f"{where}: {text}")
            return 2
    try:
        return _run(kernel, path, argv_after_dashdash, trace)
    finally:
        if own_kernel:
            kernel.shutdown()


def _run(kernel: Any, path: str, argv: list[str], trace: str | None) -> int:
    from vfiosim.supervisor import loop, sysfs
    from vfiosim.supervisor.devclock import SupervisorClock
    from vfiosim.supervisor.launcher import LaunchError, launch
    from vfiosim.supervisor.syscalls import pidfd_open

    machine = kernel.machine
    devices = [sysfs.describe(r) for r in machine.devices]
    groups = list(kernel.groups())
    trace_file = None
    if trace:
        try:
            trace_file = open(trace, "w")
        except OSError as e:
            _err(f"--trace {trace}: {e.strerror}")
            return 2
    root = tempfile.mkdtemp(prefix=f"vfiosim-run-{os.getpid()}-")
    old_affinity = pin_one_cpu()
    pidfd = -1
    listener = -1
    sup = None
    old_handlers: dict[int, Any] = {}
    try:
        char_nodes = os.geteuid() == 0
        try:
            # The tree is written by PROG's process into a tmpfs of its own mount namespace.
            launched = launch(path, argv, None, root,
                              lambda r: sysfs.build_tree(r, devices, groups, char_nodes))
        except LaunchError as e:
            _err(str(e))
            return 2
        listener = launched.listener
        if launched.namespace_error is not None:
            _err(f"no private mount namespace ({launched.namespace_error}); /dev/vfio opens "
                 "and sysfs config files are still served, path lookups see the host's tree")
        sync = loop.set_sync_wakeup(listener)  # False before 6.6: pinning still helps
        pidfd = pidfd_open(launched.pid)
        os.set_inheritable(pidfd, False)

        def forward(signum: int, _frame: Any) -> None:
            try:
                os.kill(launched.pid, signum)
            except ProcessLookupError:
                pass

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                old_handlers[s] = signal.signal(s, forward)
        sup = loop.Supervisor(
            listener, machine.lock,
            lambda proc, p, flags: kernel.core.open(proc, p, flags),
            {d.name: d for d in devices}, trace_file, launched.pid,
            request_names() if trace_file is not None else None,  # only the trace names them
            serve_paths=launched.namespace_error is not None)
        sup.sync_wakeup = sync
        machine_hook = getattr(machine, "run_supervisor_hook", None)
        if callable(machine_hook):
            machine_hook(sup)
        sup.clock_driver = SupervisorClock.adopt(getattr(machine, "clock", None))
        try:
            sup.serve(pidfd)
        finally:
            if sup.clock_driver is not None:
                sup.clock_driver.release()
                sup.clock_driver = None
            os.close(listener)
            listener = -1
        status = sup.root_status
        if status is None:
            _, status = os.waitpid(launched.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if sup is not None:
            sup.release_all()
        if listener >= 0:
            os.close(listener)
        if pidfd >= 0:
            os.close(pidfd)
        if trace_file is not None:
            trace_file.close()
        shutil.rmtree(root, ignore_errors=True)
        if old_affinity is not None:
            try:
                os.sched_setaffinity(0, old_affinity)
            except OSError:
                pass
