"""pytest plugin: fixtures that give each test a fresh simulated machine.

Installed with vfiosim (entry point ``pytest11``).  ``vfio_kernel`` builds the preset named by
the ``vfio_preset`` marker (default ``x86``) with a manual clock, so device work happens only
when the test advances time::

    @pytest.mark.vfio_preset("p4080", msi_mode="explicit")
    def test_banks(vfio_kernel): ...
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vfio_preset(name, **options): the machine the vfio_kernel fixture builds"
    )


@pytest.fixture
def vfio_kernel(request: pytest.FixtureRequest) -> Iterator[object]:
    from vfiosim import Kernel

    marker = request.node.get_closest_marker("vfio_preset")
    name = marker.args[0] if marker and marker.args else "x86"
    options = {"clock": "manual"}
    if marker:
        options.update(marker.kwargs)
    k = Kernel.from_preset(name, **options)
    try:
        yield k
    finally:
        k.shutdown()
