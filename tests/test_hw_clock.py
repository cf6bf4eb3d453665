"""hw/clock.py: the manual and the real machine clock (SPEC §12.1)."""

from __future__ import annotations

import threading
import time

import pytest

from vfiosim.hw.clock import Clock


def test_manual_runs_nothing_until_advanced() -> None:
    c = Clock("manual")
    ran: list[int] = []
    c.schedule(100, lambda: ran.append(1))
    assert c.now_ns() == 0 and ran == []
    assert c.advance(99) == 0 and ran == []
    assert c.advance(1) == 1 and ran == [1]
    assert c.now_ns() == 100


def test_manual_order_and_event_time() -> None:
    c = Clock("manual")
    seen: list[tuple[str, int]] = []
    c.schedule(30, lambda: seen.append(("c", c.now_ns())))
    c.schedule(10, lambda: seen.append(("a", c.now_ns())))
    c.schedule(10, lambda: seen.append(("b", c.now_ns())))  # tie: scheduling order
    c.advance(1000)
    assert seen == [("a", 10), ("b", 10), ("c", 30)]
    assert c.now_ns() == 1000


def test_manual_events_scheduled_by_events() -> None:
    c = Clock("manual")
    seen: list[int] = []

    def first() -> None:
        seen.append(c.now_ns())
        c.schedule(5, lambda: seen.append(c.now_ns()))  # due at 15: within the advance
        c.schedule(500, lambda: seen.append(-1))  # due at 510: not within it

    c.schedule(10, first)
    c.advance(100)
    assert seen == [10, 15]
    assert c.pending() == 1
    c.advance(410)
    assert seen == [10, 15, -1]


def test_cancel() -> None:
    c = Clock("manual")
    ran: list[int] = []
    t = c.schedule(10, lambda: ran.append(1))
    t.cancel()
    assert c.advance(100) == 0 and ran == []
    assert not t.pending


def test_run_until_idle_and_limit() -> None:
    c = Clock("manual")
    ran: list[int] = []
    c.schedule(1_000, lambda: ran.append(1))
    c.schedule(5_000_000, lambda: ran.append(2))
    assert c.run_until_idle(limit_ns=10_000) == 1
    assert ran == [1] and c.now_ns() == 1_000
    assert c.run_until_idle() == 1
    assert ran == [1, 2] and c.now_ns() == 5_000_000
    assert c.run_until_idle() == 0


def test_manual_events_hold_the_lock() -> None:
    lock = threading.RLock()
    c = Clock("manual", lock)
    owned: list[bool] = []
    c.schedule(1, lambda: owned.append(lock._is_owned()))  # type: ignore[attr-defined]
    c.advance(1)
    assert owned == [True]


def test_real_clock_refuses_advance() -> None:
    c = Clock("real")
    with pytest.raises(RuntimeError):
        c.advance(1)
    c.stop()


def test_bad_mode() -> None:
    with pytest.raises(ValueError):
        Clock("virtual")  # type: ignore[arg-type]


def _wait(cond, timeout: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.001)
    return cond()


def test_real_clock_runs_events_on_its_own() -> None:
    c = Clock("real")
    ran: list[int] = []
    t0 = c.now_ns()
    c.schedule(2_000_000, lambda: ran.append(c.now_ns()))
    assert _wait(lambda: ran)
    assert ran[0] - t0 >= 2_000_000
    c.stop()


def test_real_clock_takes_the_machine_lock() -> None:
    lock = threading.RLock()
    c = Clock("real", lock)
    ran: list[int] = []
    with lock:
        c.schedule(0, lambda: ran.append(1))
        # the clock thread is blocked on the machine lock we hold
        assert not _wait(lambda: ran, timeout=0.05)
    assert _wait(lambda: ran)
    c.stop()


def test_real_clock_earlier_event_wakes_the_thread() -> None:
    c = Clock("real")
    ran: list[str] = []
    c.schedule(60_000_000_000, lambda: ran.append("late"))
    c.schedule(1_000_000, lambda: ran.append("early"))
    assert _wait(lambda: ran == ["early"])
    c.stop()
    assert ran == ["early"]


def test_stop_drops_pending_events() -> None:
    c = Clock("real")
    c.schedule(10_000_000_000, lambda: None)
    c.stop()
    assert c.pending() == 0
    assert c._thread is not None and not c._thread.is_alive()
