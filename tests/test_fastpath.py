"""The C accelerator of the notification loop (supervisor/_fastpath.c, built by setup.py).

Its mechanics are checked here with pipes standing in for the listener; that it serves real
notifications exactly as the Python loop does is checked by test_run_plumbing.py, which runs
every test with both loops.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import subprocess
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfiosim.supervisor import host_supported, loop, run_main
from vfiosim.uapi import seccomp as sc

fastpath = loop._fastpath
needs_fastpath = pytest.mark.skipif(
    fastpath is None, reason="the C loop was not built at install: no C compiler or Python headers")


def test_built_where_a_compiler_and_the_python_headers_exist() -> None:
    """setup.py marks the extension optional, which would hide a compile error: where it can
    be built, it must have been."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if shutil.which("gcc") is None or not headers.exists():
        pytest.skip("no gcc or no Python headers: the pure-Python loop is the one installed")
    assert fastpath is not None


@pytest.fixture
def pipes() -> Iterator[tuple[int, int, int, int]]:
    """(listener_r, listener_w, other_r, other_w): two pipes."""
    a, b = os.pipe()
    c, d = os.pipe()
    yield a, b, c, d
    for fd in (a, b, c, d):
        os.close(fd)


def make_loop(listener: int, **kw: object) -> object:
    assert fastpath is not None
    args: dict[str, object] = dict(
        listener=listener, send_req=sc.SECCOMP_IOCTL_NOTIF_SEND,
        recv_req=sc.SECCOMP_IOCTL_NOTIF_RECV, ioctl_nr=sc.NR["ioctl"], tgids={}, cache={},
        procs={}, arg=object(), lock=threading.RLock(), clock=None,
        notif_buf=bytearray(fastpath.NOTIF_SIZE), resp_buf=bytearray(24))
    args.update(kw)
    return fastpath.Loop(**args)


@needs_fastpath
def test_notif_size_is_the_uapi_struct() -> None:
    assert fastpath is not None
    assert fastpath.NOTIF_SIZE == loop._NOTIF.size == 80


@needs_fastpath
def test_timeout_returns_no_events(pipes: tuple[int, int, int, int]) -> None:
    lp = make_loop(pipes[0])
    lp.others = (pipes[2],)  # type: ignore[attr-defined]
    assert lp.run(False, 0) == []  # type: ignore[attr-defined]


@needs_fastpath
def test_other_fd_events_come_back_as_poll_results(pipes: tuple[int, int, int, int]) -> None:
    lr, _, orr, ow = pipes
    lp = make_loop(lr)
    lp.others = (orr,)  # type: ignore[attr-defined]
    os.write(ow, b"x")
    assert lp.run(False, 1000) == [(orr, select.POLLIN)]  # type: ignore[attr-defined]


@needs_fastpath
def test_listener_and_other_ready_together_returns_both(
        pipes: tuple[int, int, int, int]) -> None:
    """No RECV when anything else is pending: Python drains releases first (loop.py)."""
    lr, lw, orr, ow = pipes
    buf = bytearray(80)
    buf[:] = b"\xaa" * 80
    lp = make_loop(lr, notif_buf=buf)
    lp.others = (orr,)  # type: ignore[attr-defined]
    os.write(lw, b"x")
    os.write(ow, b"x")
    assert lp.run(False, 1000) == [(lr, select.POLLIN), (orr, select.POLLIN)]  # type: ignore[attr-defined]
    assert buf == b"\xaa" * 80  # untouched: not zeroed, not received into


@needs_fastpath
def test_a_failed_recv_returns_minus_errno_after_zeroing(
        pipes: tuple[int, int, int, int]) -> None:
    lr, lw, _, _ = pipes
    buf = bytearray(b"\xaa" * 80)
    lp = make_loop(lr, notif_buf=buf)
    os.write(lw, b"x")
    assert lp.run(False, 1000) == -errno.ENOTTY  # type: ignore[attr-defined]
    assert buf == bytes(80)  # zeroed before RECV (INTERCEPTION.md pitfall 1)


@needs_fastpath
def test_hangup_is_reported_as_an_event(pipes: tuple[int, int, int, int]) -> None:
    r, w = os.pipe()
    os.close(w)
    try:
        lp = make_loop(r)
        assert lp.run(False, 1000) == [(r, select.POLLHUP)]  # type: ignore[attr-defined]
    finally:
        os.close(r)


@needs_fastpath
def test_others_must_be_a_tuple(pipes: tuple[int, int, int, int]) -> None:
    lp = make_loop(pipes[0])
    with pytest.raises(TypeError):
        lp.others = [pipes[2]]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        del lp.others  # type: ignore[attr-defined]


@needs_fastpath
@pytest.mark.parametrize("kw,exc", [
    ({"notif_buf": bytearray(79)}, ValueError),
    ({"resp_buf": bytearray(23)}, ValueError),
    ({"notif_buf": bytes(80)}, TypeError),
    ({"tgids": []}, TypeError),
    ({"lock": object()}, AttributeError),
])
def test_bad_construction_is_refused(pipes: tuple[int, int, int, int], kw: dict[str, object],
                                     exc: type[Exception]) -> None:
    with pytest.raises(exc):
        make_loop(pipes[0], **kw)


@needs_fastpath
def test_run_checks_its_arguments(pipes: tuple[int, int, int, int]) -> None:
    lp = make_loop(pipes[0])
    with pytest.raises(TypeError):
        lp.run(False)  # type: ignore[attr-defined]
    with pytest.raises(OverflowError):
        lp.run(False, 1 << 40)  # type: ignore[attr-defined]
    lp.others = (1 << 40,)  # type: ignore[attr-defined]
    with pytest.raises(OverflowError):
        lp.run(False, 0)  # type: ignore[attr-defined]


@pytest.mark.skipif(host_supported() is not None,
                    reason=f"no seccomp user notification: {host_supported()}")
@pytest.mark.parametrize("setting,expect", [(None, 1), ("0", 0)])
def test_vfiosim_fastpath_selects_the_loop(monkeypatch: pytest.MonkeyPatch,
                                           setting: str | None, expect: int) -> None:
    """The C loop serves unless VFIOSIM_FASTPATH=0; the Python loop needs nothing built."""
    from test_run_fakemodel import fake_kernel
    from test_run_plumbing import _build

    prog = _build("run_plumbing.c", "run_plumbing", False)
    made: list[object] = []
    if fastpath is not None:
        real = fastpath.Loop

        def spy(*a: object) -> object:
            made.append(a)
            return real(*a)

        monkeypatch.setattr(fastpath, "Loop", spy)
    elif expect:
        pytest.skip("the C loop was not built at install")
    if setting is None:
        monkeypatch.delenv("VFIOSIM_FASTPATH", raising=False)
    else:
        monkeypatch.setenv("VFIOSIM_FASTPATH", setting)
    assert run_main([str(prog), "basic"], None, None, kernel=fake_kernel()) == 0
    assert len(made) == expect


@needs_fastpath
def test_an_uninitialised_loop_refuses_to_run() -> None:
    assert fastpath is not None
    lp = fastpath.Loop.__new__(fastpath.Loop)
    assert lp.others == ()
    with pytest.raises(RuntimeError):
        lp.run(False, 0)


@needs_fastpath
def test_a_second_init_replaces_the_first(pipes: tuple[int, int, int, int]) -> None:
    lp = make_loop(pipes[0])
    lp.__init__(pipes[2], sc.SECCOMP_IOCTL_NOTIF_SEND,  # type: ignore[misc]
                sc.SECCOMP_IOCTL_NOTIF_RECV, -1, {}, {}, {}, object(), threading.Lock(), None,
                bytearray(80), bytearray(24))
    os.write(pipes[1], b"x")  # the old listener: no longer polled
    assert lp.run(False, 0) == []  # type: ignore[attr-defined]


def test_compiles_cleanly_with_warnings_as_errors(tmp_path: Path) -> None:
    headers = sysconfig.get_paths()["include"]
    if shutil.which("gcc") is None or not (Path(headers) / "Python.h").exists():
        pytest.skip("no gcc or no Python headers")
    src = Path(loop.__file__).with_name("_fastpath.c")
    p = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
                        "-I", headers, "-o", str(tmp_path / "fp.so"), str(src)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
