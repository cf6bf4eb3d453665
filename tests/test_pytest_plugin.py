"""The pytest plugin shipped with vfiosim (entry point ``pytest11``): the ``vfio_kernel``
fixture builds the preset its marker names, with the manual clock."""

from __future__ import annotations

import pytest


def test_default_is_x86_with_manual_clock(vfio_kernel):
    assert vfio_kernel.machine.name == "x86"
    assert vfio_kernel.machine.options.clock == "manual"


@pytest.mark.vfio_preset("p4080", msi_mode="explicit", kernel="6.1")
def test_marker_picks_preset_and_options(vfio_kernel):
    m = vfio_kernel.machine
    assert (m.name, m.options.msi_mode, str(m.profile)) == ("p4080", "explicit", "6.1")


@pytest.mark.vfio_preset("t4240")
def test_each_test_gets_a_fresh_machine(vfio_kernel):
    fd = vfio_kernel.open("/dev/vfio/1")
    assert fd == 3  # nothing left over from another test
