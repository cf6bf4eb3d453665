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

It uses the clock's public driver interface (``Clock.attach_driver``, ``run_due``,
``next_deadline_mono``, ``detach_driver``); a manual clock, or one whose thread already runs,
refuses it and keeps its own way of running events.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from vfiosim.supervisor import syscalls


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

    def _on_schedule(self) -> None:
        self.dirty = True
        if threading.get_ident() != self.ident:
            os.eventfd_write(self.wake_fd, 1)

    @classmethod
    def adopt(cls, clock: Any) -> SupervisorClock | None:
        """Take ``clock`` over from the calling thread (the one that will serve)."""
        if clock is None or not hasattr(clock, "attach_driver"):
            return None
        try:
            driver = cls(clock)
        except OSError:
            return None
        if not clock.attach_driver(driver._on_schedule):
            driver._close()
            return None
        driver.dirty = True  # events scheduled before adoption
        return driver

    def run_due(self) -> None:
        """Run every due event, then arm the timerfd for the next deadline."""
        self.dirty = False
        self.clock.run_due()
        want = self.clock.next_deadline_mono() or 0
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
        """Hand the clock back: its own thread starts if events are still pending."""
        self.clock.detach_driver()
        self._close()

    def _close(self) -> None:
        for fd in (self.timer_fd, self.wake_fd):
            if fd >= 0:
                os.close(fd)
        self.timer_fd = self.wake_fd = -1
