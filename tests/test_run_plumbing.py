"""`vfiosim run` plumbing against a fake model: filter, launcher, loop, ADDFD, remote memory,
eventfds, release semantics, fork/exec/system, threads, signals, kill, injected bugs, leaks.

C programs: tests/c/run_plumbing.c, built dynamically and statically into tests/c/build/.
The supervisor runs in this process (run_main with kernel=<fake>), so its state is visible.
Every test runs with both notification loops: the C accelerator (supervisor/_fastpath.c) and
the pure-Python one (VFIOSIM_FASTPATH=0).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_run_fakemodel import fake_kernel

from vfiosim.supervisor import bpf, host_supported, loop, run_main
from vfiosim.uapi import seccomp as sc

HERE = Path(__file__).parent
CDIR = HERE / "c"
BUILD = CDIR / "build"

pytestmark = pytest.mark.skipif(host_supported() is not None,
                                reason=f"no seccomp user notification: {host_supported()}")


@pytest.fixture(autouse=True, params=["c-loop", "python-loop"])
def notification_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which loop serves: Supervisor reads VFIOSIM_FASTPATH when it is made."""
    if request.param == "c-loop":
        if loop._fastpath is None:
            pytest.skip("the C loop (supervisor/_fastpath.c) was not built at install: no C "
                        "compiler or Python headers")
        monkeypatch.delenv("VFIOSIM_FASTPATH", raising=False)
    else:
        monkeypatch.setenv("VFIOSIM_FASTPATH", "0")
    return request.param


def _build(src: str, out: str, static: bool) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    BUILD.mkdir(exist_ok=True)
    exe = BUILD / out
    src_path = CDIR / src
    if not exe.exists() or exe.stat().st_mtime < src_path.stat().st_mtime:
        cmd = ["gcc", "-O2", "-Wall", "-pthread", "-I", str(HERE.parent / "src/vfiosim/include"),
               "-o", str(exe), str(src_path)] + (["-static"] if static else [])
        subprocess.run(cmd, check=True, capture_output=True)
    return exe


@pytest.fixture(scope="module", params=["dynamic", "static"])
def prog(request: pytest.FixtureRequest) -> Path:
    static = request.param == "static"
    return _build("run_plumbing.c", "run_plumbing" + ("_static" if static else ""), static)


def run(args: list[str], kernel=None, trace: str | None = None) -> tuple[int, object]:
    k = kernel or fake_kernel()
    return run_main([str(a) for a in args], None, trace, kernel=k), k


@pytest.mark.parametrize("mode", ["basic", "device", "paths", "exec", "bug"])
def test_modes(prog: Path, mode: str) -> None:
    rc, _ = run([prog, mode])
    assert rc == 0


def test_exit_status_passed_through(prog: Path) -> None:
    assert run([prog, "exit", "7"])[0] == 7
    assert run([prog, "exit", "0"])[0] == 0


def test_threads_8x5000(prog: Path) -> None:
    rc, _ = run([prog, "threads"])
    assert rc == 0


def test_fork_child_uses_inherited_fds(prog: Path) -> None:
    rc, k = run([prog, "fork"])
    assert rc == 0
    assert k.core.released == ["device", "group1"]  # released once, after both processes


def test_exited_processes_leave_the_caches(prog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tid -> tgid, RemoteProcess and fd-cache entries of exited processes are dropped (their
    pidfds are polled) before the parent's next call: a reused pid cannot be misattributed."""
    import test_run_fakemodel as fm

    from vfiosim.supervisor import loop

    seen: dict[str, int] = {}
    sups: list[loop.Supervisor] = []
    init = loop.Supervisor.__init__

    def capture(self: loop.Supervisor, *a: object, **kw: object) -> None:
        init(self, *a, **kw)  # type: ignore[arg-type]
        sups.append(self)

    ioctl = fm.Container.ioctl

    def snapshot(self: fm.Container, proc: object, request: int, arg: object) -> object:
        if request == 0x3BF0:
            sup = sups[-1]
            seen.update(procs=len(sup.procs), tids=len(sup.tgids), pidfds=len(sup._exit_fds),
                        cached={k[0] for k in sup.cache} == {proc.pid})  # type: ignore[attr-defined]
        return ioctl(self, proc, request, arg)

    monkeypatch.setattr(loop.Supervisor, "__init__", capture)
    monkeypatch.setattr(fm.Container, "ioctl", snapshot)
    rc, k = run([prog, "forks"])
    assert rc == 0
    assert k.core.counter == 1
    if syscalls_have_pidfd_thread():
        assert seen == {"procs": 1, "tids": 1, "pidfds": 1, "cached": True}
    else:  # before 6.9 a leader's pidfd still works: processes are dropped all the same
        assert seen["procs"] == 1 and seen["cached"]


def test_sync_wakeup_is_set_where_the_kernel_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (6.6+) keeps each round trip on one CPU."""
    from vfiosim.supervisor import loop
    from vfiosim.supervisor.syscalls import kernel_version

    sups: list[loop.Supervisor] = []
    serve = loop.Supervisor.serve

    def capture(self: loop.Supervisor, root_pidfd: int = -1) -> None:
        sups.append(self)
        serve(self, root_pidfd)

    monkeypatch.setattr(loop.Supervisor, "serve", capture)
    exe = _build("run_plumbing.c", "run_plumbing", False)
    assert run([exe, "true"])[0] == 0
    assert sups[0].sync_wakeup == (kernel_version() >= (6, 6))


def syscalls_have_pidfd_thread() -> bool:
    from vfiosim.supervisor.syscalls import kernel_version

    return kernel_version() >= (6, 9)


def test_release_semantics(prog: Path) -> None:
    rc, k = run([prog, "release"])
    assert rc == 0
    # group released after device+dup closed, after the forked child exited, and at exit
    assert k.core.released.count("group1") == 3
    assert k.core.open_groups == set()


def test_system_and_grandchildren(prog: Path) -> None:
    rc, _ = run([prog, "system", prog])
    assert rc == 0


def test_signal_storm_no_duplicates(prog: Path, tmp_path: Path) -> None:
    out = tmp_path / "ok"
    rc, k = run([prog, "storm", "20000", out])
    assert rc == 0
    ok = int(out.read_text())
    assert ok == 20000
    assert k.core.counter == ok  # every success counted once, nothing done twice


def test_sigkill_mid_ioctl(prog: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    def killer() -> None:
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.01)
        time.sleep(0.1)  # inside the 300 ms FAKE_SLOW ioctl
        os.kill(int(pidfile.read_text()), 9)

    t = threading.Thread(target=killer)
    t.start()
    t0 = time.monotonic()
    rc, _ = run([prog, "slow", pidfile])
    t.join()
    assert rc == 128 + 9
    assert time.monotonic() - t0 < 5


def test_supervisor_exception_becomes_eio(prog: Path, capfd: pytest.CaptureFixture[str]) -> None:
    rc, _ = run([prog, "bug"])
    assert rc == 0
    assert "internal error serving ioctl" in capfd.readouterr().err


def test_trace_json_lines(prog: Path, tmp_path: Path) -> None:
    import json

    tr = tmp_path / "trace.jsonl"
    rc, _ = run([prog, "basic"], trace=str(tr))
    assert rc == 0
    recs = [json.loads(line) for line in tr.read_text().splitlines()]
    ioctls = [r for r in recs if r["syscall"] == "ioctl"]
    assert any(r["request"] == "VFIO_GET_API_VERSION" and r["result"] == 0 for r in ioctls)
    einval = [r for r in ioctls if r["errno"] == "EINVAL"]
    assert einval and einval[0]["argsz"] == 4
    assert all({"pid", "tid", "duration_us"} <= set(r) for r in ioctls)
    assert any(r["syscall"] == "openat" and r["path"] == "/dev/vfio/vfio" for r in recs)


def test_python_client() -> None:
    rc, _ = run([sys.executable, str(CDIR / "pyclient.py"), "fake"])
    assert rc == 0


def test_200_runs_leak_nothing(tmp_path: Path) -> None:
    exe = _build("run_plumbing.c", "run_plumbing", False)

    def fds() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    def children() -> list[str]:
        return [p for p in os.listdir("/proc") if p.isdigit() and _ppid(p) == os.getpid()]

    # Only this process's trees: other test runs on the machine make their own meanwhile.
    mine = f"vfiosim-run-{os.getpid()}-"
    run([exe, "true"])  # warm up lazily created module state
    before_fds, before_kids = fds(), children()
    before_tmp = {p for p in os.listdir("/tmp") if p.startswith(mine)}
    before_affinity = os.sched_getaffinity(0)
    for _ in range(200):
        assert run([exe, "true"])[0] == 0
    assert fds() == before_fds
    assert children() == before_kids
    assert {p for p in os.listdir("/tmp") if p.startswith(mine)} == before_tmp
    assert os.sched_getaffinity(0) == before_affinity  # the run's CPU pinning is undone


def _ppid(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def test_missing_program_and_usage() -> None:
    assert run_main(["/nonexistent/prog"], None, None, kernel=fake_kernel()) == 127
    assert run_main([], None, None, kernel=fake_kernel()) == 2


def test_bad_machine_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[options]\nnot_an_option = 1\n')
    p = subprocess.run([sys.executable, "-m", "vfiosim", "run", "--machine", str(bad), "--",
                        "/bin/echo", "STARTED"], capture_output=True, text=True)
    assert p.returncode == 2
    assert "STARTED" not in p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0]


def test_filter_logic() -> None:
    prog = bpf.build_filter()
    n = sc.NR
    notify, allow = sc.SECCOMP_RET_USER_NOTIF, sc.SECCOMP_RET_ALLOW
    assert bpf.run_filter(prog, n["openat"], (0, 0, 0)) == notify
    assert bpf.run_filter(prog, n["open"], (0,)) == notify
    assert bpf.run_filter(prog, n["ioctl"], (3, 0x5421)) == allow
    assert bpf.run_filter(prog, n["ioctl"], (900, 0)) == notify
    assert bpf.run_filter(prog, n["ioctl"], (999, 0)) == notify
    assert bpf.run_filter(prog, n["ioctl"], (1000, 0)) == allow
    assert bpf.run_filter(prog, n["ioctl"], ((1 << 32) | 3, 0)) == allow  # low word only
    assert bpf.run_filter(prog, n["mmap"], (0, 4096, 3, 0x22, 0xFFFFFFFF, 0)) == allow
    assert bpf.run_filter(prog, n["mmap"], (0, 4096, 3, 1, 901, 0)) == notify
    assert bpf.run_filter(prog, n["dup2"], (901, 5)) == allow
    assert bpf.run_filter(prog, n["dup2"], (5, 901)) == notify
    assert bpf.run_filter(prog, n["getpid"] if "getpid" in n else 39, ()) == allow
    assert bpf.run_filter(prog, 2 | sc.X32_SYSCALL_BIT, ()) == sc.SECCOMP_RET_ERRNO | errno.ENOSYS
    assert bpf.run_filter(prog, 5, (), arch=0x40000003) == allow  # i386: not served
