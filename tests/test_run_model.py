"""C and Python VFIO clients served by the real vfiosim model under `vfiosim run`.

tests/c/vfio_client.c (dynamic and static): the seed's PAMU flow on p4080 with edu DMA and
MSI seen through poll(), Type1 v2 basics on x86, the SET_IRQS checklist; tests/c/pyclient.py;
lspci listing the simulated devices from the generated sysfs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pamu_helpers import reserve_hugepages
from test_run_plumbing import _build

from vfiosim.supervisor import host_supported

HERE = Path(__file__).parent
pytestmark = pytest.mark.skipif(host_supported() is not None,
                                reason=f"no seccomp user notification: {host_supported()}")


def vfiosim_run(machine: str, *prog: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vfiosim", "run", "--machine", machine, "--",
                           *prog], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=["dynamic", "static"])
def client(request: pytest.FixtureRequest) -> Path:
    static = request.param == "static"
    return _build("vfio_client.c", "vfio_client" + ("_static" if static else ""), static)


@pytest.mark.parametrize("machine,mode", [("p4080", "pamu"), ("x86", "type1"),
                                          ("x86", "setirqs")])
def test_c_client(client: Path, machine: str, mode: str) -> None:
    if mode == "pamu" and not reserve_hugepages(2):
        pytest.skip("the PAMU flow needs two free 2 MiB huge pages and none can be reserved")
    p = vfiosim_run(machine, str(client), mode)
    assert p.returncode == 0, p.stderr
    assert f"{mode}: ok" in p.stdout


def test_python_client_x86() -> None:
    p = vfiosim_run("x86", sys.executable, str(HERE / "c" / "pyclient.py"), "x86")
    assert p.returncode == 0, p.stderr
    assert "pyclient: ok" in p.stdout


@pytest.mark.skipif(shutil.which("lspci") is None, reason="pciutils not installed")
@pytest.mark.parametrize("machine,expect", [
    ("x86", ["01:00.0 Unassigned class [ff00]: Device [1234:11e8] (rev 10)",
             "02:00.0 DMA controller [0801]: Device [1234:dc01]"]),
    ("p4080", ["0000:01:00.0 Unassigned class [ff00]: Device [1234:11e8] (rev 10)",
               "0001:01:00.0 DMA controller [0801]: Device [1234:dc01]"]),
])
def test_lspci_sees_the_machine(machine: str, expect: list[str]) -> None:
    p = vfiosim_run(machine, "lspci", "-nn")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 2
    for want, line in zip(expect, lines, strict=True):
        assert line.startswith(want)
    k = vfiosim_run(machine, "lspci", "-k")
    assert k.stdout.count("Kernel driver in use: vfio-pci") == 2


def test_paths_the_model_lacks_are_enoent() -> None:
    p = vfiosim_run("x86", "sh", "-c", "ls /sys/kernel/debug/iommu; ls /dev/vfio")
    assert "No such file" in p.stderr
    assert sorted(p.stdout.split()) == ["1", "2", "vfio"]


@pytest.fixture(scope="module")
def dmacopy_prog() -> Path:
    return _build("dmacopy_run.c", "dmacopy_run", False)


def test_dmacopy_c_client_through_type1_and_msix(dmacopy_prog: Path) -> None:
    """tests/c/dmacopy_run.c check: 1 MiB and odd-sized copies, a batch, status words, HEAD,
    COMPLETED, the completion record, one MSI per INT descriptor, a faulting read-only
    destination -- the real dmacopy model under the CLI."""
    p = vfiosim_run("x86", str(dmacopy_prog), "check")
    assert p.returncode == 0, p.stderr
    assert "dmacopy: ok" in p.stdout


@pytest.mark.parametrize("delay_us", [0.0, 1500.0])
@pytest.mark.parametrize("fastpath", ["1", "0"])
def test_device_events_run_on_the_supervisor_thread(dmacopy_prog: Path, delay_us: float,
                                                    fastpath: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine clock is driven by the supervisor loop (devclock.py): no clock thread is
    started, delayed engine runs fire from the timerfd, and the clock is handed back.  Both
    loops: the C one returns to Python when a doorbell leaves device events due."""
    import threading

    from vfiosim.supervisor import load_kernel, run_main

    monkeypatch.setenv("VFIOSIM_FASTPATH", fastpath)
    k = load_kernel("x86")
    try:
        k.machine.options.dmacopy_delay_us = delay_us
        hw = next(d.hw for d in k.machine.devices if d.name == "0000:02:00.0")
        hw.delay_ns = int(delay_us * 1000)
        threads: set[str] = set()
        kicks: list[int] = []
        runs: list[int] = []
        orig_run, orig_kick = hw._run, hw._kick

        def run() -> None:
            threads.add(threading.current_thread().name)
            runs.append(k.machine.clock.now_ns())
            orig_run()

        def kick() -> None:
            pending = hw._timer is not None and hw._timer.pending
            orig_kick()
            if not pending and hw._timer is not None:
                kicks.append(k.machine.clock.now_ns())

        hw._run, hw._kick = run, kick
        assert run_main([str(dmacopy_prog), "check"], None, None, kernel=k) == 0
        assert threads == {threading.current_thread().name}
        assert len(runs) == len(kicks) == 5  # CTRL.ENABLE, then four doorbells
        assert all(r - q >= delay_us * 1000 for q, r in zip(kicks, runs, strict=True))
        assert k.machine.clock._thread is None
        assert "vfiosim-clock" not in {t.name for t in threading.enumerate()}
    finally:
        k.shutdown()


def test_prog_is_pinned_to_one_cpu_unless_asked_not_to() -> None:
    import os

    code = "import os; print(len(os.sched_getaffinity(0)))"
    ncpu = len(os.sched_getaffinity(0))
    p = vfiosim_run("x86", sys.executable, "-c", code)
    assert p.returncode == 0, p.stderr
    assert int(p.stdout) == 1
    env = dict(os.environ, VFIOSIM_RUN_PIN="0")
    q = subprocess.run([sys.executable, "-m", "vfiosim", "run", "--", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=120, env=env)
    assert q.returncode == 0, q.stderr
    assert int(q.stdout) == ncpu
