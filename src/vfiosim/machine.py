"""The simulated machine: options, machine files (TOML) and the hardware they build.

SPEC §2 (presets, machine options, kernel profiles) [decision D1, D13, D14].  Presets are
machine files shipped in ``vfiosim/presets/`` in the same format users write (SPEC Appendix A
#5).  Every key is checked; a bad file gives one ``ValueError`` line naming the file, the key and
what is wrong (``OSError`` when the file cannot be opened).

Schema (all tables optional unless marked)::

    [machine]            name (str), description (str), iommu = "type1" | "fsl_pamu" (required)
    [options]            SPEC §2.6 options (kernel, msi_mode, ...)
    [iommu]              type1 only: aperture_end, pgsizes, dma_entry_limit,
                         reserved = [{start, last, type}]
    [pamu]               fsl_pamu only: paact_entries, spaact_entries, max_subwindows,
                         aperture_end, cpus, l1_stash_as_l2
    [msi]                fsl_pamu only: type = "msiir" | "msiir1", banks, ccsr_base
    [memory]             dram_base, dram_size, contiguous_pool_base, contiguous_pool_size
    [[pcie_controller]]  fsl_pamu only: index, liodn, ccsr_offset
    [[device]]           name (BDF, required), model = "edu" | "dmacopy" (required),
                         group (required), driver (default "vfio-pci"), bar0, irq_line,
                         controller (fsl_pamu: index of its PCIe controller)
"""

from __future__ import annotations

import os
import re
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from vfiosim.kernel.profile import KernelProfile
from vfiosim.kernel.sanitizer import SanitizerReport

# ---------------------------------------------------------------------------------------------
# Options (SPEC §2.6)


@dataclass
class Options:
    """Machine options, SPEC §2.6.  Presets use these defaults."""

    kernel: str = "6.18"
    msi_mode: str = "auto"
    sdk_swallow_errors: bool = False
    contiguous_memory: bool = False
    bar_mmap: bool = False
    av_disables_liodn: bool = True
    edu_dma_mask_bits: int = 28
    edu_dma_delay_ms: float = 100.0
    edu_factorial_delay_ms: float = 1.0
    dmacopy_delay_us: float = 0.0
    clock: str = "real"


def _check_option(name: str, value: Any) -> Any:
    """Validate one option value; ValueError with the reason (the caller adds where)."""
    boolean = {"sdk_swallow_errors", "contiguous_memory", "bar_mmap", "av_disables_liodn"}
    if name == "kernel":
        if not isinstance(value, str):
            raise ValueError(f"must be a string \"X.Y\", got {value!r}")
        KernelProfile.from_string(value)
        return value
    if name == "msi_mode":
        if value not in ("auto", "explicit"):
            raise ValueError(f"must be \"auto\" or \"explicit\", got {value!r}")
        return value
    if name == "clock":
        if value not in ("real", "manual"):
            raise ValueError(f"must be \"real\" or \"manual\", got {value!r}")
        return value
    if name in boolean:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
        return value
    if name == "edu_dma_mask_bits":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
            raise ValueError(f"must be an integer from 1 to 64, got {value!r}")
        return value
    if name in ("edu_dma_delay_ms", "edu_factorial_delay_ms", "dmacopy_delay_us"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"must be a number >= 0, got {value!r}")
        return float(value)
    raise AssertionError(name)


OPTION_NAMES = tuple(f.name for f in fields(Options))


def make_options(base: dict[str, Any], overrides: dict[str, Any], where: str) -> Options:
    """Options from a machine file's [options] (``base``) and keyword ``overrides``.

    An unknown name raises ValueError naming it and listing the valid ones [decision D14]."""
    opts = Options()
    for source, table in (("file", base), ("keyword", overrides)):
        for name, value in table.items():
            if name not in OPTION_NAMES:
                loc = f"{where}: options.{name}" if source == "file" else f"option {name!r}"
                raise ValueError(
                    f"{loc}: unknown option; valid options are {', '.join(OPTION_NAMES)}"
                )
            try:
                setattr(opts, name, _check_option(name, value))
            except ValueError as e:
                loc = f"{where}: options.{name}" if source == "file" else f"option {name!r}"
                raise ValueError(f"{loc}: {e}") from None
    return opts


# ---------------------------------------------------------------------------------------------
# Machine files


class MachineFileError(ValueError):
    """A machine file that cannot be used: one line naming the file, the key and the problem."""


_BDF = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$")


def parse_bdf(name: str) -> tuple[int, int, int, int]:
    """"0000:01:00.0" -> (segment, bus, slot, function); ValueError when malformed."""
    m = _BDF.match(name) if isinstance(name, str) else None
    if not m or int(m.group(3), 16) > 0x1F:
        raise ValueError(f"must be a PCI address like \"0000:01:00.0\", got {name!r}")
    return int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16), int(m.group(4))


def _int(v: Any, lo: int = 0, hi: int = (1 << 64) - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"must be an integer from {lo:#x} to {hi:#x}, got {v!r}")
    return v


def _str(v: Any, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a string, got {v!r}")
    if choices and v not in choices:
        raise ValueError(f"must be one of {', '.join(map(repr, choices))}, got {v!r}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {v!r}")
    return v


DEVICE_MODELS = ("edu", "dmacopy")
# Drivers a machine file may bind a device to: vfio-pci, or a host driver that claims its DMA
# ownership (its group is then not viable, SPEC §4.1, Appendix A #37).
VFIO_DRIVERS = ("vfio-pci",)

_TYPE1_DEFAULTS = {
    "aperture_end": (1 << 48) - 1,  # SPEC §2.4 [proposed], Appendix A #2
    "pgsizes": 0x40201000,
    "dma_entry_limit": 65535,
    "reserved": [{"start": 0xFEE0_0000, "last": 0xFEEF_FFFF, "type": "msi"}],
}
_PAMU_DEFAULTS = {
    "paact_entries": 0x500,
    "spaact_entries": 2048,
    "max_subwindows": 256,
    "aperture_end": (1 << 36) - 1,
    "cpus": 8,
    "l1_stash_as_l2": False,
}
_MSI_DEFAULTS = {"type": "msiir", "banks": 3, "ccsr_base": 0xF_FE00_0000}
_MEMORY_DEFAULTS = {
    "dram_base": 0x1_0000_0000,
    "dram_size": 0x40_0000_0000,
    "contiguous_pool_base": 0x80_0000_0000,
    "contiguous_pool_size": 0x40_0000_0000,
}
# PAMU machines: everything below 2^36, the physical address width PAMU translates to.
_PAMU_MEMORY_DEFAULTS = {
    "dram_base": 0x0,
    "dram_size": 0x4_0000_0000,
    "contiguous_pool_base": 0x4_0000_0000,
    "contiguous_pool_size": 0x4_0000_0000,
}


@dataclass
class DeviceRecord:
    """One simulated PCI device (``k.devices()``, SPEC §12.1)."""

    name: str
    group: int
    vendor: int
    device: int
    driver: str
    model: str
    rid: int
    hw: Any = field(default=None, repr=False)
    controller: int | None = None

    @property
    def is_vfio(self) -> bool:
        return self.driver in VFIO_DRIVERS


@dataclass
class MachineSpec:
    """A validated machine file."""

    source: str
    name: str
    description: str
    iommu: str
    options: dict[str, Any]
    iommu_config: dict[str, Any]
    pamu_config: dict[str, Any]
    msi_config: dict[str, Any]
    memory: dict[str, Any]
    controllers: list[dict[str, Any]]
    devices: list[dict[str, Any]]


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    v = doc.get(key, {})
    if not isinstance(v, dict):
        raise MachineFileError(f"{where}: {key}: must be a table")
    return v


def _fill(table: dict[str, Any], defaults: dict[str, Any], checks: dict[str, Any],
          where: str, prefix: str) -> dict[str, Any]:
    out = dict(defaults)
    for k, v in table.items():
        if k not in checks:
            raise MachineFileError(
                f"{where}: {prefix}.{k}: unknown key; valid keys are {', '.join(checks)}")
        try:
            out[k] = checks[k](v)
        except ValueError as e:
            raise MachineFileError(f"{where}: {prefix}.{k}: {e}") from None
    return out


def _reserved(v: Any) -> list[dict[str, Any]]:
    if not isinstance(v, list):
        raise ValueError("must be an array of {start, last, type} tables")
    out = []
    for i, r in enumerate(v):
        if not isinstance(r, dict) or set(r) != {"start", "last", "type"}:
            raise ValueError(f"entry {i} must be a table with keys start, last, type")
        start, last = _int(r["start"]), _int(r["last"])
        if last < start:
            raise ValueError(f"entry {i}: last is below start")
        out.append({"start": start, "last": last, "type": _str(r["type"], ("msi", "reserved"))})
    return out


def _pow2(v: Any) -> int:
    v = _int(v, 1, 1 << 20)
    if v & (v - 1):
        raise ValueError(f"must be a power of two, got {v}")
    return v


def parse_machine(doc: dict[str, Any], where: str) -> MachineSpec:
    """Validate a parsed machine file."""
    known = {"machine", "options", "iommu", "pamu", "msi", "memory", "pcie_controller", "device"}
    for k in doc:
        if k not in known:
            raise MachineFileError(
                f"{where}: {k}: unknown table; valid tables are {', '.join(sorted(known))}")
    m = _fill(_table(doc, "machine", where), {"name": _stem(where), "description": ""},
              {"name": _str, "description": _str,
               "iommu": lambda v: _str(v, ("type1", "fsl_pamu"))}, where, "machine")
    if "iommu" not in m:
        raise MachineFileError(f"{where}: machine.iommu: missing; must be \"type1\" or "
                               "\"fsl_pamu\"")
    options = _table(doc, "options", where)
    try:
        make_options(options, {}, where)
    except ValueError as e:
        raise MachineFileError(str(e)) from None
    pamu = m["iommu"] == "fsl_pamu"
    if not pamu:
        for k in ("pamu", "msi", "pcie_controller"):
            if k in doc:
                raise MachineFileError(f"{where}: {k}: only for machines with iommu = "
                                       "\"fsl_pamu\"")
    elif "iommu" in doc:
        raise MachineFileError(f"{where}: iommu: only for machines with iommu = \"type1\"")
    iommu_cfg = _fill(_table(doc, "iommu", where), _TYPE1_DEFAULTS, {
        "aperture_end": _int, "pgsizes": lambda v: _int(v, 1), "reserved": _reserved,
        "dma_entry_limit": lambda v: _int(v, 0, 0xFFFF_FFFF)}, where, "iommu")
    if iommu_cfg["pgsizes"] & 0xFFF:
        raise MachineFileError(f"{where}: iommu.pgsizes: the smallest page must be >= 4 KiB")
    pamu_cfg = _fill(_table(doc, "pamu", where), _PAMU_DEFAULTS, {
        "paact_entries": lambda v: _int(v, 1, 0x1000),
        "spaact_entries": lambda v: _int(v, 1, 0x10000),
        "max_subwindows": _pow2, "aperture_end": lambda v: _int(v, 0xFFF, (1 << 64) - 1),
        "cpus": lambda v: _int(v, 1, 256), "l1_stash_as_l2": _bool}, where, "pamu")
    msi_cfg = _fill(_table(doc, "msi", where), _MSI_DEFAULTS, {
        "type": lambda v: _str(v, ("msiir", "msiir1")), "banks": lambda v: _int(v, 1, 16),
        "ccsr_base": _int}, where, "msi")
    mem = _fill(_table(doc, "memory", where),
                _PAMU_MEMORY_DEFAULTS if pamu else _MEMORY_DEFAULTS, {
        k: _int for k in _MEMORY_DEFAULTS}, where, "memory")

    dram = (mem["dram_base"], mem["dram_base"] + mem["dram_size"])
    pool = (mem["contiguous_pool_base"], mem["contiguous_pool_base"] +
            mem["contiguous_pool_size"])
    if dram[0] < pool[1] and pool[0] < dram[1]:
        raise MachineFileError(f"{where}: memory.contiguous_pool_base: the contiguous pool "
                               "overlaps DRAM")
    if pamu:
        for key, (_, end) in (("dram_size", dram), ("contiguous_pool_size", pool)):
            if end > 1 << 36:
                raise MachineFileError(
                    f"{where}: memory.{key}: ends at {end:#x}, above 2^36: PAMU windows "
                    "translate to 36-bit physical addresses")

    controllers: list[dict[str, Any]] = []
    raw_ctrls = doc.get("pcie_controller", [])
    if not isinstance(raw_ctrls, list):
        raise MachineFileError(f"{where}: pcie_controller: must be an array of tables")
    for i, c in enumerate(raw_ctrls):
        if not isinstance(c, dict):
            raise MachineFileError(f"{where}: pcie_controller[{i}]: must be a table")
        c = _fill(c, {"ccsr_offset": 0}, {
            "index": lambda v: _int(v, 0, 15), "liodn": lambda v: _int(v, 0, 0xFFF),
            "ccsr_offset": _int}, where, f"pcie_controller[{i}]")
        for req in ("index", "liodn"):
            if req not in c:
                raise MachineFileError(f"{where}: pcie_controller[{i}].{req}: missing")
        if any(o["index"] == c["index"] for o in controllers):
            raise MachineFileError(f"{where}: pcie_controller[{i}].index: duplicate index "
                                   f"{c['index']}")
        controllers.append(c)

    devices: list[dict[str, Any]] = []
    raw_devs = doc.get("device", [])
    if not isinstance(raw_devs, list):
        raise MachineFileError(f"{where}: device: must be an array of tables")
    for i, d in enumerate(raw_devs):
        p = f"device[{i}]"
        if not isinstance(d, dict):
            raise MachineFileError(f"{where}: {p}: must be a table")
        d = _fill(d, {"driver": "vfio-pci", "irq_line": 0, "bar0": None, "controller": None}, {
            "name": lambda v: (parse_bdf(v), v)[1], "model": lambda v: _str(v, DEVICE_MODELS),
            "group": lambda v: _int(v, 0, 0xFFFF), "driver": _str,
            "bar0": lambda v: _int(v, 0, 0xFFFF_FFFF), "irq_line": lambda v: _int(v, 0, 255),
            "controller": lambda v: _int(v, 0, 15)}, where, p)
        for req in ("name", "model", "group"):
            if req not in d:
                raise MachineFileError(f"{where}: {p}.{req}: missing")
        if any(o["name"] == d["name"] for o in devices):
            raise MachineFileError(f"{where}: {p}.name: duplicate device {d['name']}")
        if pamu:
            if d["controller"] is None:
                raise MachineFileError(f"{where}: {p}.controller: missing (PAMU devices use "
                                       "their PCIe controller's LIODN)")
            ctrl = [c for c in controllers if c["index"] == d["controller"]]
            if not ctrl:
                raise MachineFileError(f"{where}: {p}.controller: no pcie_controller with "
                                       f"index {d['controller']}")
            d["rid"] = ctrl[0]["liodn"]
        else:
            if d["controller"] is not None:
                raise MachineFileError(f"{where}: {p}.controller: only for fsl_pamu machines")
            seg, bus, slot, fn = parse_bdf(d["name"])
            d["rid"] = (seg << 16) | (bus << 8) | (slot << 3) | fn
        devices.append(d)
    # One IOMMU group per PCIe controller on PAMU (SPEC §7.1): devices sharing a controller
    # share its group, and a group spans one controller.
    if pamu:
        for d in devices:
            for o in devices:
                if (d["controller"] == o["controller"]) != (d["group"] == o["group"]):
                    raise MachineFileError(
                        f"{where}: device {o['name']}: group {o['group']} and device "
                        f"{d['name']}: group {d['group']}: devices behind one PCIe controller "
                        "share its IOMMU group, and only they do")
    return MachineSpec(where, m["name"], m["description"], m["iommu"], options, iommu_cfg,
                       pamu_cfg, msi_cfg, mem, controllers, devices)


def load_machine_file(path: str | os.PathLike[str]) -> MachineSpec:
    """Read and validate a machine file; OSError if it cannot be opened, ValueError else."""
    where = str(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise MachineFileError(f"{where}: not UTF-8 text ({e.reason})") from None
    except tomllib.TOMLDecodeError as e:
        raise MachineFileError(f"{where}: TOML syntax error: {e}") from None
    return parse_machine(doc, where)


# Presets ship inside the package (package-data); a plain directory read keeps `vfiosim run`
# start-up free of importlib.resources and pathlib.
PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")


def _stem(where: str) -> str:
    return os.path.splitext(os.path.basename(where))[0]


def preset_names() -> list[str]:
    return sorted(n[:-5] for n in os.listdir(PRESET_DIR) if n.endswith(".toml"))


def load_preset(name: str) -> MachineSpec:
    if not isinstance(name, str) or name not in preset_names():
        raise ValueError(f"unknown preset {name!r}; presets are {', '.join(preset_names())}")
    with open(os.path.join(PRESET_DIR, f"{name}.toml"), "rb") as f:
        doc = tomllib.load(f)
    return parse_machine(doc, f"preset {name}")


def resolve_machine(name_or_path: str) -> MachineSpec:
    """``--machine NAME|FILE``: a preset name, or a path to a machine file."""
    if name_or_path in preset_names():
        return load_preset(name_or_path)
    if os.sep in name_or_path or name_or_path.endswith(".toml") or os.path.exists(name_or_path):
        return load_machine_file(name_or_path)
    raise ValueError(f"unknown machine {name_or_path!r}: not a preset "
                     f"({', '.join(preset_names())}) and not a file")


# ---------------------------------------------------------------------------------------------
# The machine


class Machine:
    """A simulated machine built from a :class:`MachineSpec` and options.

    Attributes promised to the other layers (docs/architecture.md §6): ``lock``, ``options``,
    ``profile``, ``clock``, ``bus``, ``irq``, ``iommu``, ``msi``, ``devices``, ``groups``,
    ``faults``, ``record_fault()``, ``fault_hooks``, ``events``, ``log()``, ``sanitizer``,
    ``report()``, ``warnings``, ``iommu_config``, ``pamu_config``, ``msi_config``,
    ``memory_config``, ``locked_vm``, ``iommu_drivers``; on PAMU machines also ``pamu`` (the
    same object as ``iommu``) and ``controllers``.
    """

    def __init__(self, spec: MachineSpec, **overrides: Any) -> None:
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.options = make_options(spec.options, overrides, spec.source)
        self.profile = KernelProfile.from_string(self.options.kernel)
        self.lock = threading.RLock()
        self.faults: list[Any] = []
        #: Called with each FaultRecord after it is recorded (vfio-pci's sanitizer check).
        self.fault_hooks: list[Callable[[Any], None]] = []
        self.events: list[str] = []
        self.sanitizer: list[SanitizerReport] = []
        self.locked_vm: dict[int, int] = {}
        self.iommu_config = spec.iommu_config
        self.pamu_config = spec.pamu_config
        self.msi_config = spec.msi_config
        self.memory_config = spec.memory
        self.controllers = spec.controllers
        self.kind = spec.iommu
        self._build()

    def log(self, msg: str) -> None:
        """A device or kernel log line (clamping, spurious IRQs, dropped MSIs, ...)."""
        self.events.append(msg)

    def record_fault(self, rec: Any) -> None:
        """A device DMA faulted (``hw.iommu.FaultRecord``): log it for ``machine.faults`` and
        tell the fault hooks (hw/ records, kernel/ decides what it means; docs §6)."""
        self.faults.append(rec)
        for hook in self.fault_hooks:
            hook(rec)

    def report(self, kind: str, message: str, **detail: Any) -> None:
        """A sanitizer report: a client bug the model noticed; behaviour is unchanged
        (SPEC §13.8, kernel/sanitizer.py)."""
        self.sanitizer.append(SanitizerReport(kind, message, detail, self.clock.now_ns()))
        self.events.append(f"sanitizer: {kind}: {message}")

    @property
    def warnings(self) -> list[str]:
        """The sanitizer reports' messages, oldest first."""
        return [r.message for r in self.sanitizer]

    def _build(self) -> None:
        from vfiosim.hw.clock import Clock
        from vfiosim.hw.devices import make_device
        from vfiosim.hw.irq import IrqDomain
        from vfiosim.hw.memory import PhysBus

        self.clock = Clock(self.options.clock, self.lock)
        self.bus = PhysBus(self)
        self.irq = IrqDomain(self)
        if self.kind == "type1":
            from vfiosim.hw.iommu import PageTableIommu
            from vfiosim.hw.x86_msi import X86Msi
            from vfiosim.kernel.iommu.type1 import Type1Driver

            self.iommu = PageTableIommu(self)
            self.msi = X86Msi(self)
            self.iommu_drivers: list[type] = [Type1Driver]
        else:
            from vfiosim.hw.fsl_msi import FslMsi
            from vfiosim.hw.pamu import Pamu
            from vfiosim.kernel.iommu.pamu import PamuDriver

            self.iommu = self.pamu = Pamu.from_machine(self)
            self.msi = FslMsi.from_machine(self)
            self.iommu_drivers = [PamuDriver]
        self.devices: list[DeviceRecord] = []
        for d in self.spec.devices:
            hw = make_device(self, d)
            self.devices.append(DeviceRecord(
                name=d["name"], group=d["group"], vendor=hw.cfg_read(0, 2),
                device=hw.cfg_read(2, 2), driver=d["driver"], model=d["model"], rid=d["rid"], hw=hw,
                controller=d["controller"]))
        self.groups: dict[int, list[DeviceRecord]] = {}
        for rec in self.devices:
            self.groups.setdefault(rec.group, []).append(rec)

    def device(self, name: str) -> DeviceRecord:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)

    def shutdown(self) -> None:
        self.clock.stop()


def build_machine(spec: MachineSpec, **overrides: Any) -> Machine:
    return Machine(spec, **overrides)


__all__ = [
    "DeviceRecord", "Machine", "MachineFileError", "MachineSpec", "OPTION_NAMES", "Options",
    "build_machine", "load_machine_file", "load_preset", "make_options", "parse_bdf",
    "preset_names", "resolve_machine",
]
