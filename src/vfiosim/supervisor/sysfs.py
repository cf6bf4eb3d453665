"""The sysfs and /dev presence of the simulated machine, for `vfiosim run`.

PROG's process, after fork and before exec, mounts a tmpfs of its private mount namespace
on an empty directory and writes this tree there (enter_namespace with ``build``)::

    pci/devices/<BDF>/{vendor,device,class,revision,subsystem_vendor,subsystem_device,irq,
                       resource,numa_node,modalias,enable,config,driver ->, iommu_group ->,
                       vfio-dev/}
    pci/drivers/vfio-pci/<BDF> -> ../../devices/<BDF>
    pci/slots/
    iommu_groups/<N>/devices/<BDF> -> ../../../../bus/pci/devices/<BDF>
    iommu_groups/<N>/type
    dev_vfio/{vfio,<N>}          (placeholder nodes)

and PROG's child process, in a private mount namespace, bind-mounts ``pci`` over
/sys/bus/pci, ``iommu_groups`` over /sys/kernel/iommu_groups, an empty directory over
/sys/kernel/debug (so the host's IOMMU debugfs answers ENOENT) and ``dev_vfio`` over /dev/vfio.
Where /dev/vfio does not exist on the host, /dev is covered by an overlay (lower: the host's
/dev, upper: a private directory) whose submounts (pts, shm, mqueue, ...) are moved back on
top.  Only the mount namespace sees any of it; the host is unchanged.

In the real sysfs /sys/bus/pci/devices/<BDF> is a link into /sys/devices/pci<D>:<B>/; here it
is the device directory itself, so `iommu_group` is ``../../../../kernel/iommu_groups/<N>``
(four levels up from /sys/bus/pci/devices/<BDF> is /sys) -- it resolves to the same place and
its last component is the group number, which is what clients read.

`config` is a placeholder: opening it is intercepted and served live from the model (reads
and writes call the device's cfg_read/cfg_write, see loop.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vfiosim.supervisor import syscalls


@dataclass
class SysfsDevice:
    name: str  # BDF, "0000:01:00.0"
    group: int
    driver: str
    vendor: int
    device: int
    revision: int
    class_code: int  # 24 bits
    subsystem_vendor: int
    subsystem_device: int
    irq: int
    config_size: int
    resources: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, flags)
    hw: Any = None


IORESOURCE_MEM = 0x200
IORESOURCE_PREFETCH = 0x2000
IORESOURCE_MEM_64 = 0x100000
IORESOURCE_SIZEALIGN = 0x40000


def describe(record: Any) -> SysfsDevice:
    """A SysfsDevice from one of ``Kernel.devices()``'s records (its ``hw`` PciFunction)."""
    hw = record.hw

    def cfg(off: int, size: int) -> int:
        return int(hw.cfg_read(off, size))

    resources: list[tuple[int, int, int]] = []
    bars = list(getattr(hw, "bars", []) or [])
    i = 0
    while i < 6:
        bar = bars[i] if i < len(bars) else None
        size = int(getattr(bar, "size", 0) or 0) if bar is not None else 0
        if size:
            is64 = bool(getattr(bar, "is64", False))
            low = cfg(0x10 + 4 * i, 4)
            addr = low & ~0xF
            if is64 and i < 5:
                addr |= cfg(0x14 + 4 * i, 4) << 32
            flags = IORESOURCE_MEM | IORESOURCE_SIZEALIGN
            if is64:
                flags |= IORESOURCE_MEM_64
            if getattr(bar, "prefetch", False):
                flags |= IORESOURCE_PREFETCH
            resources.append((addr, addr + size - 1 if addr else size - 1, flags))
            if is64:
                resources.append((0, 0, 0))
                i += 1
        else:
            resources.append((0, 0, 0))
        i += 1
    resources = resources[:6]
    resources.append((0, 0, 0))  # expansion ROM
    return SysfsDevice(
        name=record.name,
        group=int(record.group),
        driver=str(getattr(record, "driver", "vfio-pci") or "vfio-pci"),
        vendor=int(record.vendor),
        device=int(record.device),
        revision=cfg(0x08, 1),
        class_code=cfg(0x09, 1) | (cfg(0x0A, 1) << 8) | (cfg(0x0B, 1) << 16),
        subsystem_vendor=cfg(0x2C, 2),
        subsystem_device=cfg(0x2E, 2),
        irq=cfg(0x3C, 1),
        config_size=4096 if getattr(hw, "is_pcie", False) else 256,
        resources=resources,
        hw=hw,
    )


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def build_tree(root: str, devices: list[SysfsDevice], groups: list[int],
               char_nodes: bool) -> None:
    """Write the tree under ``root`` (an empty private directory)."""
    pci = os.path.join(root, "pci")
    devdir = os.path.join(pci, "devices")
    drivers = os.path.join(pci, "drivers")
    os.makedirs(devdir)
    os.makedirs(os.path.join(pci, "slots"))
    groups_dir = os.path.join(root, "iommu_groups")
    os.makedirs(groups_dir)
    os.makedirs(os.path.join(root, "empty"))
    os.makedirs(os.path.join(root, "stage"))
    for g in sorted(set(groups) | {d.group for d in devices}):
        os.makedirs(os.path.join(groups_dir, str(g), "devices"))
        _write(os.path.join(groups_dir, str(g), "type"), "DMA\n")
        _write(os.path.join(groups_dir, str(g), "reserved_regions"), "")
    for d in devices:
        p = os.path.join(devdir, d.name)
        os.makedirs(os.path.join(p, "vfio-dev"))
        _write(os.path.join(p, "vendor"), f"0x{d.vendor:04x}\n")
        _write(os.path.join(p, "device"), f"0x{d.device:04x}\n")
        _write(os.path.join(p, "class"), f"0x{d.class_code:06x}\n")
        _write(os.path.join(p, "revision"), f"0x{d.revision:02x}\n")
        _write(os.path.join(p, "subsystem_vendor"), f"0x{d.subsystem_vendor:04x}\n")
        _write(os.path.join(p, "subsystem_device"), f"0x{d.subsystem_device:04x}\n")
        _write(os.path.join(p, "irq"), f"{d.irq}\n")
        _write(os.path.join(p, "numa_node"), "-1\n")
        _write(os.path.join(p, "enable"), "0\n")
        _write(os.path.join(p, "modalias"),
               f"pci:v{d.vendor:08X}d{d.device:08X}sv{d.subsystem_vendor:08X}"
               f"sd{d.subsystem_device:08X}bc{d.class_code >> 16:02X}"
               f"sc{(d.class_code >> 8) & 0xFF:02X}i{d.class_code & 0xFF:02X}\n")
        _write(os.path.join(p, "resource"),
               "".join(f"0x{s:016x} 0x{e:016x} 0x{f:016x}\n" for s, e, f in d.resources))
        with open(os.path.join(p, "config"), "wb") as f:
            f.truncate(d.config_size)
        os.symlink(f"../../../../kernel/iommu_groups/{d.group}", os.path.join(p, "iommu_group"))
        os.makedirs(os.path.join(drivers, d.driver), exist_ok=True)
        os.symlink(f"../../drivers/{d.driver}", os.path.join(p, "driver"))
        os.symlink(f"../../devices/{d.name}", os.path.join(drivers, d.driver, d.name))
        os.symlink(f"../../../../bus/pci/devices/{d.name}",
                   os.path.join(groups_dir, str(d.group), "devices", d.name))
    vdir = os.path.join(root, "dev_vfio")
    os.makedirs(vdir)
    for name, minor in [("vfio", 196)] + [(str(g), g) for g in sorted(groups)]:
        path = os.path.join(vdir, name)
        if char_nodes:
            # Placeholder nodes: every open of /dev/vfio/* is served by the supervisor; the
            # numbers only make stat() show character devices (10:196 is the real misc node).
            dev = os.makedev(10, 196) if name == "vfio" else os.makedev(243, minor)
            os.mknod(path, 0o20666 if name == "vfio" else 0o20600, dev)
        else:
            _write(path, "")


def _submounts(prefix: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(prefix + "/"):
                out.append(mp)
    # Parents before children; a path mounted twice is moved once (the top one).
    seen: list[str] = []
    for mp in sorted(set(out), key=lambda s: s.count("/")):
        if not any(mp.startswith(s + "/") for s in seen):
            seen.append(mp)
    return seen


def enter_namespace(root: str, build: Callable[[str], None] | None = None) -> None:
    """In PROG's (forked) process: private mount namespace with the tree. Raises OSError.

    With ``build``, ``root`` is an empty directory: a tmpfs private to the namespace is
    mounted on it and ``build(root)`` writes the tree there (2.8 ms instead of 19 ms for
    writing and removing it on the test VM's ext4 /tmp; nothing to clean up afterwards)."""
    if os.geteuid() == 0:
        syscalls.unshare(syscalls.CLONE_NEWNS)
    else:
        uid, gid = os.geteuid(), os.getegid()
        syscalls.unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUSER)
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    if build is not None:
        syscalls.mount("tmpfs", root, "tmpfs", 0, "mode=0755")
        build(root)
    syscalls.mount(os.path.join(root, "pci"), "/sys/bus/pci", None, syscalls.MS_BIND)
    syscalls.mount(os.path.join(root, "iommu_groups"), "/sys/kernel/iommu_groups", None,
                   syscalls.MS_BIND)
    if os.path.isdir("/sys/kernel/debug"):
        syscalls.mount(os.path.join(root, "empty"), "/sys/kernel/debug", None,
                       syscalls.MS_BIND)
    vfio = os.path.join(root, "dev_vfio")
    if not os.path.isdir("/dev/vfio"):
        stage = os.path.join(root, "stage")
        syscalls.mount("tmpfs", stage, "tmpfs", 0, "mode=0700")
        for sub in ("up", "work", "old"):
            os.mkdir(os.path.join(stage, sub))
        subs = _submounts("/dev")
        syscalls.mount("/dev", os.path.join(stage, "old"), None,
                       syscalls.MS_BIND | syscalls.MS_REC)
        syscalls.mount("overlay", "/dev", "overlay", 0,
                       f"lowerdir=/dev,upperdir={stage}/up,workdir={stage}/work")
        for mp in subs:
            rel = mp[len("/dev/"):]
            src = os.path.join(stage, "old", rel)
            if os.path.ismount(src) and os.path.exists(mp):
                syscalls.mount(src, mp, None, syscalls.MS_MOVE)
        os.mkdir("/dev/vfio", 0o755)
    syscalls.mount(vfio, "/dev/vfio", None, syscalls.MS_BIND)
