"""Fault-injection sweep (SPEC §13.8; the pattern of iommufd_fail_nth.c): make the n-th internal
allocation fail, run a whole client session, and check that the failure surfaced as the kernel's
errno and that tearing the session down leaves nothing behind; repeat for n = 1, 2, ... until
the session no longer reaches the injected failure.

Injection points (each an allocation the kernel can fail): simulated frames for pinning
(``PhysBus.pin``: get_user_pages / ENOMEM), MSI vectors (``machine.msi.alloc``: no free hwirq),
and PAMU SPAACE runs (``pamu_get_fspi_and_allocate``: "spaace indexes exhausted").
"""

from __future__ import annotations

import errno
import io
from collections.abc import Callable
from typing import Any

import pytest

from vfiosim import Kernel
from vfiosim.demo import Printer, _seed_flow, _type1_flow
from vfiosim.hw.pamu import ULONG_MAX

# What a session may see when an allocation fails: ENOMEM (pinning), ENOSPC (MSI vector),
# EINVAL (SPAACT exhausted at SET_ATTR WINDOWS).
ALLOWED = {errno.ENOMEM, errno.ENOSPC, errno.EINVAL}


class Injector:
    """Counts calls of the wrapped allocators and makes call number ``nth`` fail."""

    def __init__(self, nth: int) -> None:
        self.nth = nth
        self.calls = 0
        self.fired = False

    def _hit(self) -> bool:
        self.calls += 1
        if self.calls == self.nth:
            self.fired = True
            return True
        return False

    def wrap(self, obj: Any, name: str, failure: Callable[[], Any]) -> None:
        real = getattr(obj, name)

        def wrapper(*args: Any, **kw: Any) -> Any:
            if self._hit():
                return failure()
            return real(*args, **kw)

        setattr(obj, name, wrapper)


def _raise_memory_error() -> Any:
    raise MemoryError("injected: no frame left")


def _session(preset: str, nth: int) -> tuple[Injector, int | None, Kernel]:
    k = Kernel.from_preset(preset, clock="manual", contiguous_memory=True)
    inj = Injector(nth)
    m = k.machine
    inj.wrap(m.bus, "pin", _raise_memory_error)
    inj.wrap(m.msi, "alloc", lambda: None)
    if m.kind == "fsl_pamu":
        inj.wrap(m.pamu, "pamu_get_fspi_and_allocate", lambda: ULONG_MAX)
    flow = _seed_flow if m.kind == "fsl_pamu" else _type1_flow
    err: int | None = None
    try:
        if m.kind == "fsl_pamu":
            flow(k, Printer(io.StringIO()), None)  # type: ignore[call-arg]
        else:
            flow(k, Printer(io.StringIO()))  # type: ignore[call-arg]
    except OSError as e:
        err = e.errno
    return inj, err, k


def _leftovers(k: Kernel, spaace_free: int | None) -> list[str]:
    m = k.machine
    out = []
    if m.bus.pinned_bytes():
        out.append(f"{m.bus.pinned_bytes()} bytes still pinned")
    if any(m.locked_vm.values()):
        out.append(f"locked_vm {m.locked_vm}")
    if k.core.containers:
        out.append(f"{len(k.core.containers)} containers alive")
    if spaace_free is not None and m.pamu.spaace_free_count() != spaace_free:
        out.append("SPAACEs not returned to the pool")
    if m.kind == "fsl_pamu" and any(b.free_count() != b.type.hwirqs for b in m.msi.banks):
        out.append("MSI hwirqs still allocated")
    return out


@pytest.mark.parametrize("preset", ["x86", "p4080", "t4240"])
def test_every_injected_failure_is_an_errno_and_leaves_nothing(preset):
    nth = 1
    while True:
        inj, err, k = _session(preset, nth)
        spaace_free = None
        if k.machine.kind == "fsl_pamu":
            # Every SPAACE comes back at detach; measure against a fresh machine's pool.
            spaace_free = Kernel.from_preset(preset, clock="manual").machine.pamu \
                .spaace_free_count()
        try:
            if inj.fired:
                assert err in ALLOWED, (nth, err)
            else:
                assert err is None, (nth, err)  # nothing injected: the session succeeds
            k.shutdown()
            assert _leftovers(k, spaace_free) == [], (nth, err)
        finally:
            k.shutdown()
        if not inj.fired:
            break
        nth += 1
    assert nth > 2  # the sweep really reached several allocation sites
