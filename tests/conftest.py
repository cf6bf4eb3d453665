"""Shared fixtures: every test starts from a named preset, built fresh (STYLE.md "Tests").

Machines use the manual clock unless a test asks otherwise, so device work happens only when
the test advances time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vfiosim import Kernel


@pytest.fixture
def make_kernel() -> Iterator[Callable[..., Kernel]]:
    """``make_kernel("x86", kernel="6.1")``: a fresh kernel, shut down after the test."""
    made: list[Kernel] = []

    def make(preset: str = "x86", **options: Any) -> Kernel:
        options.setdefault("clock", "manual")
        k = Kernel.from_preset(preset, **options)
        made.append(k)
        return k

    yield make
    for k in made:
        k.shutdown()


@pytest.fixture
def x86(make_kernel: Callable[..., Kernel]) -> Kernel:
    return make_kernel("x86")


@pytest.fixture
def p4080(make_kernel: Callable[..., Kernel]) -> Kernel:
    return make_kernel("p4080")


@pytest.fixture
def t4240(make_kernel: Callable[..., Kernel]) -> Kernel:
    return make_kernel("t4240")
