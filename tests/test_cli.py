"""The `vfiosim` command: demo, machines, check, aperture, and its error handling."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from vfiosim.cli import main
from vfiosim.demo import run_demo


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vfiosim.cli", *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_demo_runs_the_seed_flow_on_p4080():
    out = io.StringIO()
    assert run_demo("p4080", out=out, clock="manual") == 0
    text = out.getvalue()
    for step in ("VFIO_GROUP_SET_CONTAINER", "VFIO_SET_IOMMU(VFIO_FSL_PAMU_IOMMU = 2)",
                 "VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT", "GEOMETRY", "WINDOWS 16",
                 "VFIO_IOMMU_MAP_DMA", "VFIO_DEVICE_SET_IRQS", "poll(eventfd)"):
        assert step in text
    assert "3 MSI banks" in text
    # Banks at the top windows, growing down (SPEC §6.9).
    assert "window  15" in text and "MSI bank 0" in text
    assert "window  13" in text and "MSI bank 2" in text
    assert "MSI address 0x1e00140, data 0x0" in text
    assert "readable, count 1" in text


def test_demo_on_t4240_uses_four_banks_and_msiir1():
    out = io.StringIO()
    assert run_demo("t4240", out=out, clock="manual") == 0
    text = out.getvalue()
    assert "4 MSI banks" in text
    assert "MSI address 0x1e00148" in text
    assert "window  12" in text and "MSI bank 3" in text


def test_demo_on_x86_runs_type1():
    out = io.StringIO()
    assert run_demo("x86", out=out, clock="manual") == 0
    text = out.getvalue()
    assert "VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)" in text
    assert "b'type1 round trip'" in text
    assert "readable, count 1" in text


def test_demo_command_with_real_clock():
    r = _cli("demo")
    assert r.returncode == 0, r.stderr
    assert "readable, count 1" in r.stdout
    assert r.stderr == ""


def test_machines_lists_presets(capsys):
    assert main(["machines"]) == 0
    out = capsys.readouterr().out
    assert "p4080:" in out and "0001:01:00.0" in out and "x86:" in out


def test_check_valid_and_invalid_files(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text('[machine]\niommu = "type1"\n[[device]]\nname = "0000:03:00.0"\n'
                    'model = "edu"\ngroup = 4\n')
    assert main(["check", str(good)]) == 0
    assert '"groups": [4]' in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[machine]\niommu = "type1"\n[options]\nkernel = "5.4"\n')
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.toml: options.kernel" in err


def test_aperture_picture(capsys):
    assert main(["aperture", "--size", "32M", "--windows", "16", "--map", "4M"]) == 0
    out = capsys.readouterr().out
    assert "window 0 |DD" in out and "MMM|" in out


@pytest.mark.parametrize("args,needle", [
    (["demo", "--machine", "nope"], "unknown preset 'nope'"),
    (["aperture", "--size", "huge"], "not a size"),
    (["bogus"], "invalid choice"),
    (["check", "/nonexistent/board.toml"], "No such file"),
    (["run"], "run needs a program"),
])
def test_bad_arguments_are_one_error_line(args, needle):
    r = _cli(*args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1, r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
