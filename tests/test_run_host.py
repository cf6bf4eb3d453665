"""`vfiosim run` on a host that cannot serve it: one clear error line, exit status 2
(SPEC §12.3).  The host is faked with a patched os.uname; nothing is started."""

from __future__ import annotations

import os

import pytest

from vfiosim import supervisor
from vfiosim.supervisor import run_main

_REAL = os.uname()


def _uname(release: str, machine: str) -> os.uname_result:
    u = _REAL
    return os.uname_result((u.sysname, u.nodename, release, u.version, machine))


@pytest.mark.parametrize("release,machine", [("5.18.19", "x86_64"), ("6.18.0", "aarch64"),
                                             ("4.19.0-26-amd64", "x86_64")])
def test_unsupported_host_is_one_error_line_and_status_2(monkeypatch, capsys, release,
                                                         machine):
    monkeypatch.setattr(os, "uname", lambda: _uname(release, machine))
    assert supervisor.host_supported() is not None
    assert run_main(["/bin/true"], "x86", None) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Linux >= 5.19 on x86_64" in err and release in err and machine in err


def test_supported_host_has_no_reason(monkeypatch):
    monkeypatch.setattr(os, "uname", lambda: _uname("5.19.0", "x86_64"))
    assert supervisor.host_supported() is None
