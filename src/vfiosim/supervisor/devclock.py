"""Device time on the supervisor thread: the machine clock without its own thread.

In real mode the machine clock (hw/clock.py) runs due events on a daemon thread.  Under
`vfiosim run` that thread competes with the supervisor thread for the GIL and the machine lock:
a doorbell pwrite wakes it (often on the other CPU), the engine's memory copies release the GIL
to the supervisor and back, and when the event signals an MSI eventfd PROG wakes and calls in
while the clock thread still holds the machine lock.  Measured on the 2-vCPU test VM, that cost
~25 us of lock wait and ~30 us of thread wake-up per doorbell.

:class:`SupervisorClock` takes the clock over for the supervisor's lifetime instead:

* the clock's thread is never started (its slot is taken before anything is scheduled);
* ``schedule`` is wrapped: it records that the heap changed and, when called from another
  thread (a virqfd thread, a test), writes an eventfd the supervisor polls;
* the supervisor calls :meth:`run_due` after each reply it sends while something was
  scheduled, and when the timerfd (armed at the earliest deadline, CLOCK_MONOTONIC, ns
  resolution) or the eventfd is readable.  Due events run exactly as the clock thread runs
  them: with the machine lock, in deadline order, an exception printed and counted.

A doorbell therefore runs the engine right after its pwrite is answered, on the same thread
and CPU, and the MSI eventfd is written from there.  When serving ends the clock is handed back
(:meth:`release`): its own thread starts if events are still pending.

This uses the clock's internals (``_thread``, ``_pop_due``, ``_fire``, ``_cond``); when they
are missing, or the clock is manual or its thread already runs, :meth:`adopt` returns None and
the clock keeps its thread.
"""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any

from vfiosim.supervisor import syscalls

_NEEDS = ("_thread", "_pop_due", "_fire", "_cond", "_heap", "_t0", "_ensure_thread",
          "next_deadline", "now_ns", "lock", "schedule")


class SupervisorClock:
    """A real-mode machine clock driven by the supervisor loop (module docstring)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.dirty = False  # schedule() was called since the last run_due()
        self.ident = threading.get_ident()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            self.timer_fd = syscalls.timerfd_create()
        except OSError:
            os.close(self.wake_fd)
            raise
        self._armed = 0  # absolute CLOCK_MONOTONIC deadline armed in timer_fd; 0: none
        self._schedule = clock.schedule

        def schedule(delay_ns: int, fn: Any) -> Any:
            timer = self._schedule(delay_ns, fn)
            self.dirty = True
            if threading.get_ident() != self.ident:
                os.eventfd_write(self.wake_fd, 1)
            return timer

        clock.schedule = schedule

    @classmethod
    def adopt(cls, clock: Any) -> SupervisorClock | None:
        """Take ``clock`` over from the calling thread (the one that will serve)."""
        if clock is None or getattr(clock, "mode", None) != "real":
            return None
        if any(not hasattr(clock, name) for name in _NEEDS):
            return None
        with clock._cond:
            if clock._thread is not None or getattr(clock, "_stopped", False):
                return None
            # Occupy the thread slot: Clock._ensure_thread() starts nothing while it is set.
            clock._thread = threading.current_thread()
        try:
            driver = cls(clock)
        except OSError:
            with clock._cond:
                clock._thread = None
            return None
        driver.dirty = True  # events scheduled before adoption
        return driver

    def run_due(self) -> None:
        """Run every due event, then arm the timerfd for the next deadline."""
        self.dirty = False
        clock = self.clock
        while True:
            timer = clock._pop_due(clock.now_ns())
            if timer is None:
                break
            try:
                with clock.lock:
                    clock._fire(timer)
            except Exception:  # as the clock thread: a device bug must not stop time
                clock.errors += 1
                traceback.print_exc()
        nxt = clock.next_deadline()
        want = 0 if nxt is None else nxt + clock._t0
        if want != self._armed:
            syscalls.timerfd_set_abs(self.timer_fd, want)
            self._armed = want

    def on_wake(self) -> None:
        """The timerfd or the eventfd was readable: consume, then run due events."""
        for fd in (self.timer_fd, self.wake_fd):
            try:
                os.read(fd, 8)
            except BlockingIOError:
                pass
        self._armed = 0  # re-arm whatever is next (at worst one redundant settime)
        self.run_due()

    def release(self) -> None:
        """Hand the clock back: restore schedule(), free the thread slot and start the
        clock's own thread if events are pending."""
        clock = self.clock
        try:
            del clock.schedule
        except AttributeError:
            pass
        with clock._cond:
            if clock._thread is threading.current_thread() or \
                    clock._thread is not None and not clock._thread.is_alive():
                clock._thread = None
            if any(t.pending for _, _, t in clock._heap):
                clock._ensure_thread()
                clock._cond.notify()
        for fd in (self.timer_fd, self.wake_fd):
            os.close(fd)
        self.timer_fd = self.wake_fd = -1
