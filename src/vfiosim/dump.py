"""State dumps: containers, groups, devices, mappings, windows, faults, sanitizer reports
(SPEC §12.1, §13.8).

Each layer describes itself (``dump()`` on backends and hardware where it exists); this module
only assembles the picture, so a dump never reaches past a layer's own words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vfiosim.api import Kernel


def _fault(f: Any) -> dict[str, Any]:
    if hasattr(f, "__dataclass_fields__"):
        return {k: getattr(f, k) for k in f.__dataclass_fields__}
    return {"fault": repr(f)}


def dump_kernel(k: Kernel) -> dict[str, Any]:
    m = k.machine
    containers = []
    for i, c in enumerate(m_containers(k)):
        entry: dict[str, Any] = {
            "index": i,
            "groups": [g.number for g in c.groups],
            "backend": c.driver.name if c.driver else None,
        }
        if c.backend is not None and hasattr(c.backend, "dump"):
            entry["state"] = c.backend.dump()
        containers.append(entry)
    groups = []
    for n, g in k.core.groups.items():
        groups.append({
            "group": n,
            "open": g.opened_file is not None,
            "viable": g.viable(),
            "attached": g.container is not None,
            "container_users": g.container_users,
            "devices": [d.name for d in g.devices],
            "open_device_files": len(g.device_files),
        })
    out: dict[str, Any] = {
        "machine": m.name,
        "kernel_profile": str(m.profile),
        "options": dict(vars(m.options)),
        "devices": [
            {"name": d.name, "group": d.group, "vendor": f"{d.vendor:#06x}",
             "device": f"{d.device:#06x}", "driver": d.driver, "model": d.model,
             "rid": d.rid}
            for d in m.devices
        ],
        "groups": groups,
        "containers": containers,
        "fds": {fd: f.describe() for fd, f in sorted(k._fds.items())},
        "faults": [_fault(f) for f in m.faults],
        "warnings": list(m.warnings),
        "sanitizer": [r.as_dict() for r in m.sanitizer],
        "events": list(m.events[-50:]),
    }
    if hasattr(m.iommu, "dump"):
        out["iommu"] = m.iommu.dump()
    if hasattr(m.msi, "dump"):
        out["msi"] = m.msi.dump()
    return out


def m_containers(k: Kernel) -> list[Any]:
    return list(k.core.containers)
