"""The device models a machine file can name (``[[device]] model = ...``) and their factory."""

from __future__ import annotations

from typing import Any

from vfiosim.hw.dmacopy import DmaCopy
from vfiosim.hw.edu import Edu
from vfiosim.hw.pci import PciFunction

MODELS: dict[str, type[PciFunction]] = {"edu": Edu, "dmacopy": DmaCopy}


def make_device(machine: Any, spec: dict[str, Any]) -> PciFunction:
    """Build the device of one ``[[device]]`` table: ``name`` (BDF), ``model``, ``rid``,
    ``bar0`` (address firmware assigned, default 0), ``irq_line`` (default 0). Other keys
    (group, driver, controller) are the kernel's."""
    model = spec["model"]
    try:
        cls = MODELS[model]
    except KeyError:
        raise ValueError(
            f"unknown device model {model!r}; valid: {', '.join(sorted(MODELS))}"
        ) from None
    return cls(
        machine,
        spec["name"],
        spec["rid"],
        bar0=spec.get("bar0") or 0,
        irq_line=spec.get("irq_line") or 0,
    )
