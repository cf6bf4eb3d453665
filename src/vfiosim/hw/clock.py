"""The machine clock: device time, real or manual (SPEC §12.1, §2.6 option ``clock``).

Device work (edu's DMA and factorial, dmacopy's descriptor processing) is *scheduled* on the
clock and runs as an event once its delay has passed. Events run with the machine lock held
(docs/architecture.md §2), so an event sees model state exactly as a request handler does.

Two modes:

* ``"real"`` (the default of a machine): time is ``time.monotonic_ns()`` since the clock was
  built. One daemon thread sleeps on a condition variable until the earliest deadline, then
  takes the machine lock and runs every due event. A client that polls a status register or
  waits on an eventfd sees the work complete on its own.
* ``"manual"``: time stands still until the test calls :meth:`Clock.advance` or
  :meth:`Clock.run_until_idle`; due events then run in deadline order (ties in scheduling
  order) on the caller's thread, each at its own deadline (``now_ns()`` inside an event is the
  event's deadline). Events scheduled by events run too if they fall due within the advance.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import traceback
from collections.abc import Callable
from typing import Literal

ClockMode = Literal["real", "manual"]


class Timer:
    """One scheduled event; :meth:`cancel` stops it from running (idempotent)."""

    __slots__ = ("deadline_ns", "fn", "cancelled", "fired")

    def __init__(self, deadline_ns: int, fn: Callable[[], None]) -> None:
        self.deadline_ns = deadline_ns
        self.fn = fn
        self.cancelled = False
        self.fired = False

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def pending(self) -> bool:
        return not (self.cancelled or self.fired)


class Clock:
    """The machine clock. ``lock`` is the machine lock (``threading.RLock``)."""

    def __init__(self, mode: ClockMode = "real", lock: threading.RLock | None = None) -> None:
        if mode not in ("real", "manual"):
            raise ValueError(f"clock mode must be 'real' or 'manual', not {mode!r}")
        self.mode: ClockMode = mode
        self.lock = lock if lock is not None else threading.RLock()
        self._heap: list[tuple[int, int, Timer]] = []
        self._seq = itertools.count()
        self._now = 0  # manual mode
        self._t0 = time.monotonic_ns()
        self._cond = threading.Condition(threading.Lock())  # guards _heap in real mode
        self._thread: threading.Thread | None = None
        self._driver: Callable[[], None] | None = None  # an outside loop runs the events
        self._stopped = False
        self.errors = 0  # real mode: events that raised (printed, then skipped)

    # -- time ------------------------------------------------------------------------------

    def now_ns(self) -> int:
        if self.mode == "manual":
            return self._now
        return time.monotonic_ns() - self._t0

    # -- scheduling ------------------------------------------------------------------------

    def schedule(self, delay_ns: int, fn: Callable[[], None]) -> Timer:
        """Run ``fn()`` (with the machine lock held) ``delay_ns`` from now."""
        delay_ns = max(0, int(delay_ns))
        timer = Timer(self.now_ns() + delay_ns, fn)
        with self._cond:
            heapq.heappush(self._heap, (timer.deadline_ns, next(self._seq), timer))
            driver = self._driver
            if self.mode == "real" and driver is None:
                self._ensure_thread()
                self._cond.notify()
        if driver is not None:
            driver()
        return timer

    def pending(self) -> int:
        """Number of scheduled events not yet run or cancelled."""
        with self._cond:
            return sum(1 for _, _, t in self._heap if t.pending)

    def next_deadline(self) -> int | None:
        with self._cond:
            self._drop_cancelled()
            return self._heap[0][0] if self._heap else None

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)

    def _pop_due(self, limit_ns: int) -> Timer | None:
        with self._cond:
            self._drop_cancelled()
            if self._heap and self._heap[0][0] <= limit_ns:
                return heapq.heappop(self._heap)[2]
            return None

    @staticmethod
    def _fire(timer: Timer) -> None:
        if timer.cancelled or timer.fired:
            return
        timer.fired = True
        timer.fn()

    # -- manual mode -----------------------------------------------------------------------

    def advance(self, ns: int) -> int:
        """Manual mode: move time forward by ``ns``, running due events. Returns events run."""
        self._require_manual("advance")
        target = self._now + max(0, int(ns))
        ran = 0
        with self.lock:
            while (timer := self._pop_due(target)) is not None:
                self._now = max(self._now, timer.deadline_ns)
                self._fire(timer)
                ran += 1
            self._now = target
        return ran

    def run_until_idle(self, limit_ns: int | None = None) -> int:
        """Manual mode: run events until none is left (or the next one is more than
        ``limit_ns`` past the current time). Time ends at the last event run. Returns the
        number of events run."""
        self._require_manual("run_until_idle")
        horizon = None if limit_ns is None else self._now + int(limit_ns)
        ran = 0
        with self.lock:
            while True:
                with self._cond:
                    self._drop_cancelled()
                    if not self._heap or (horizon is not None and self._heap[0][0] > horizon):
                        break
                    timer = heapq.heappop(self._heap)[2]
                self._now = max(self._now, timer.deadline_ns)
                self._fire(timer)
                ran += 1
        return ran

    def _require_manual(self, what: str) -> None:
        if self.mode != "manual":
            raise RuntimeError(f"Clock.{what}() needs the manual clock (option clock='manual')")

    # -- real mode -------------------------------------------------------------------------

    def attach_driver(self, on_schedule: Callable[[], None]) -> bool:
        """Let an outside event loop run a real-mode clock instead of the clock's thread.

        ``on_schedule()`` is called after every :meth:`schedule` (from whatever thread calls
        it); the loop then calls :meth:`run_due` and waits until :meth:`next_deadline_mono`.
        Refused (False) for a manual clock, a stopped one, or one whose thread already runs.
        """
        with self._cond:
            if self.mode != "real" or self._stopped or self._thread is not None:
                return False
            self._driver = on_schedule
            return True

    def detach_driver(self) -> None:
        """Hand the events back to the clock's own thread (started if any is pending)."""
        with self._cond:
            self._driver = None
            self._drop_cancelled()
            if self._heap and not self._stopped:
                self._ensure_thread()
                self._cond.notify()

    def run_due(self) -> int:
        """Run every event whose deadline has passed, as the clock thread would: each with the
        machine lock held, in deadline order; one that raises is printed and counted.
        Returns the number run."""
        ran = 0
        while (timer := self._pop_due(self.now_ns())) is not None:
            self._fire_locked(timer)
            ran += 1
        return ran

    def _fire_locked(self, timer: Timer) -> None:
        """Run one event of the real clock with the machine lock held; an event that raises
        is printed and counted, and time goes on for every other device."""
        try:
            with self.lock:
                self._fire(timer)
        except Exception:
            self.errors += 1
            traceback.print_exc()

    def next_deadline_mono(self) -> int | None:
        """The earliest pending deadline as an absolute ``time.monotonic_ns()`` value (real
        mode), for a loop that arms a CLOCK_MONOTONIC timer."""
        nxt = self.next_deadline()
        return None if nxt is None else nxt + self._t0

    def _ensure_thread(self) -> None:  # called with _cond held
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._run, name="vfiosim-clock", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    self._drop_cancelled()
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait_ns = self._heap[0][0] - self.now_ns()
                    if wait_ns <= 0:
                        timer = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(wait_ns / 1e9)
            # The machine lock is taken outside _cond: schedule() is called with the machine
            # lock held and takes _cond, so the opposite order here would deadlock.
            self._fire_locked(timer)

    def stop(self) -> None:
        """Shut the clock down: pending events are dropped, the thread ends."""
        with self._cond:
            self._stopped = True
            for _, _, t in self._heap:
                t.cancel()
            self._heap.clear()
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
