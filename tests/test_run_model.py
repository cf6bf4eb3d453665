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
    if mode == "pamu":
        with open("/proc/sys/vm/nr_hugepages") as f:
            if int(f.read()) < 2:
                pytest.skip("the PAMU flow needs two free 2 MiB huge pages")
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
