"""vfio-pci: the device file of a PCI function.

Models drivers/vfio/pci/vfio_pci_core.c (open/close, the device ioctls, read/write, mmap) and
drivers/vfio/pci/vfio_pci_rdwr.c (BAR access).  Config space is kernel/pci/config.py, the
interrupts kernel/pci/intrs.py.  SPEC §4.5, §11.2-§11.5, §2.7 #13, #16, #17.

Regions are addressed by file offset: region ``i`` starts at ``i << 40``
(``VFIO_PCI_OFFSET_SHIFT``)::

    index  region   file offset          edu
    0      BAR0     0x000_0000_0000      1 MiB memory, READ|WRITE (MMAP with bar_mmap)
    1-5    BAR1-5   i << 40              size 0, flags 0
    6      ROM      0x600_0000_0000      size 0 (no ROM), flags 0
    7      CONFIG   0x700_0000_0000      256 bytes (4096 on PCI Express), READ|WRITE
    8      VGA      -                    EINVAL (not a VGA device)

Hardware facts the model relies on (every preset): each device sits alone behind a port whose
secondary bus reset works, so function reset and hot reset both work (SPEC §11.4,
decision D17); x86 can allocate MSI-X vectors dynamically (kernel ``pci_msix_can_alloc_dyn``
with the x86 vector/remapping domains, 6.5 and later), the Freescale MSI controller cannot.
"""

from __future__ import annotations

import errno
import mmap as _mmap
import struct
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vfiosim.kernel import sanitizer as san
from vfiosim.kernel.caps import fixed_part_size
from vfiosim.kernel.pci import config as cfg
from vfiosim.kernel.pci import intrs
from vfiosim.kernel.uaccess import PAGE_SIZE, Process, UserArg, kerr, read_struct, write_struct
from vfiosim.kernel.vfio_main import vfio_check_feature
from vfiosim.uapi import pci_regs as R
from vfiosim.uapi import vfio as V
from vfiosim.uapi.vfio import offsetofend, sizeof

if TYPE_CHECKING:
    from vfiosim.kernel.group import Group


@dataclass(frozen=True)
class MmapRegion:
    """What mmap of a device fd maps: ``length`` bytes of region ``index`` from ``offset``
    within the region (the in-process API and the runner turn it into a real mapping)."""

    index: int
    offset: int
    length: int


#: ``pci_power_t`` values the model uses (PMCSR state encoding).
PCI_D0 = 0
PCI_D3HOT = 3

#: vfio-pci devices of each machine by name: the kernel's ``vfio_device_set`` lookups (hot
#: reset affects every device on the bus).
_DEVICES: weakref.WeakKeyDictionary[Any, dict[str, VfioPciDevice]] = weakref.WeakKeyDictionary()


def _parse_bdf(name: str) -> tuple[int, int, int]:
    """"0000:01:00.0" -> (segment, bus, devfn)."""
    seg, bus, rest = name.split(":")
    slot, fn = rest.split(".")
    return int(seg, 16), int(bus, 16), R.PCI_DEVFN(int(slot, 16), int(fn))


class VfioPciDevice:
    """The vfio-pci driver of one device (``struct vfio_pci_core_device``), for the machine's
    life; the device file forwards to it (docs/architecture.md §4)."""

    def __init__(self, machine: Any, record: Any, group: Group) -> None:
        self.machine = machine
        self.record = record
        self.group = group
        self.hw = record.hw
        self.name: str = record.name
        self.profile = machine.profile
        self.segment, self.bus, self.devfn = _parse_bdf(record.name)
        self.cfg_size = R.PCI_CFG_SPACE_EXP_SIZE if self.hw.is_pcie else R.PCI_CFG_SPACE_SIZE
        # interrupts (vfio_pci_intrs.c)
        self.irq_type = V.VFIO_PCI_NUM_IRQS
        self.ctx: dict[int, intrs.IrqCtx] = {}
        self.num_ctx = 0
        self.virq_disabled = False
        self.msi_qmax = 0
        self.err_trigger: Any = None
        self.req_trigger: Any = None
        # config space (vfio_pci_config.c)
        self.vconfig = bytearray()
        self.pci_config_map = bytearray()
        self.msi_perm: cfg.PermBits | None = None
        self.extended_caps = False
        self.bardirty = True
        self.rbar: list[int] = [0] * 7
        # vfio_pci_core_enable() results
        self.opened = False
        self.reset_works = False
        self.pci_2_3 = True
        self.msix_bar = 0xFF
        self.msix_offset = 0
        self.msix_size = 0
        self.has_dyn_msix = False
        self.has_vga = False
        self.bar_mmap_supported = [False] * 6
        self.needs_reset = False
        self._saved_state: Any = None
        # power state (vfio_pci_probe_power_state, vfio_pci_set_power_state)
        self.needs_pm_restore = False
        self.pm_save: Any = None
        self._probe_power_state()
        # runtime PM of the low power features (vfio_pci_core_pm_entry & co)
        self.pm_runtime_engaged = False
        self.pm_wake_eventfd_ctx: Any = None
        self.pm_intx_masked = False
        self._pm_active_calls = 0
        self._pm_suspended = False
        _DEVICES.setdefault(machine, {})[self.name] = self
        self.hw.on_intx(self._intx_line)
        machine.fault_hooks.append(self._dma_fault)

    # -- small helpers ---------------------------------------------------------------------

    def bar_len(self, bar: int) -> int:
        """``pci_resource_len()`` of an implemented BAR (the upper half of a 64-bit BAR and
        unimplemented BARs: 0)."""
        if bar < 0 or bar >= R.PCI_STD_NUM_BARS:
            return 0
        if bar > 0 and self.hw.bars[bar - 1].size and self.hw.bars[bar - 1].is64:
            return 0
        return self.hw.bars[bar].size

    def intx_pin(self) -> int:
        return self.hw.cfg_read(R.PCI_INTERRUPT_PIN, 1)

    def intx_asserted(self) -> bool:
        return bool(self.hw.intx_level)

    def msix_table_size(self) -> int:
        return self.hw.msix_vectors

    def msi_address(self, doorbell: int) -> int:
        """The address the device must write to reach ``doorbell`` (SPEC §9)."""
        container = self.group.container
        if container is None or container.backend is None:
            raise kerr(errno.ENODEV)
        return container.backend.msi_address(self.group, doorbell)

    def _memory_enabled(self) -> bool:
        """``__vfio_pci_memory_enabled()``: the device is not in D3hot and the *virtual*
        memory-space bit is set."""
        cmd = int.from_bytes(self.vconfig[R.PCI_COMMAND:R.PCI_COMMAND + 2], "little")
        return self.current_state() < PCI_D3HOT and bool(cmd & R.PCI_COMMAND_MEMORY)

    # -- power state (vfio_pci_core.c) ----------------------------------------------------------

    def current_state(self) -> int:
        """``pdev->current_state``: the PMCSR power state (D0 without a PM capability)."""
        pos = self.hw.find_cap(R.PCI_CAP_ID_PM)
        if not pos:
            return PCI_D0
        return self.hw.cfg_read(pos + R.PCI_PM_CTRL, 2) & R.PCI_PM_CTRL_STATE_MASK

    def _probe_power_state(self) -> None:
        """``vfio_pci_probe_power_state()``: a device that resets on D3hot -> D0
        (No_Soft_Reset clear) needs its state restored after it."""
        pos = self.hw.find_cap(R.PCI_CAP_ID_PM)
        if pos:
            pmcsr = self.hw.cfg_read(pos + R.PCI_PM_CTRL, 2)
            self.needs_pm_restore = not pmcsr & R.PCI_PM_CTRL_NO_SOFT_RESET

    def set_power_state(self, state: int) -> None:
        """``vfio_pci_set_power_state()`` around ``pci_set_power_state()``: the state is
        saved on the way into D3hot and restored on the way back to D0 when the device
        soft-resets (``needs_pm_restore``).  A state the device does not take (D1, D2 on
        the models) fails, and nothing is saved or restored."""
        pos = self.hw.find_cap(R.PCI_CAP_ID_PM)
        if not pos:
            return
        cur = self.current_state()
        if cur == state:
            return
        needs_save = needs_restore = False
        saved = None
        if self.needs_pm_restore:
            if cur < PCI_D3HOT <= state:
                saved = self.hw.save_state()  # pci_save_state()
                needs_save = True
            if cur >= PCI_D3HOT and state <= PCI_D0:
                needs_restore = True
        pmcsr = self.hw.cfg_read(pos + R.PCI_PM_CTRL, 2)
        self.hw.cfg_write(pos + R.PCI_PM_CTRL, 2,
                          (pmcsr & ~R.PCI_PM_CTRL_STATE_MASK) | state)
        if self.current_state() != state:
            return  # pci_set_power_state() failed
        if needs_save:
            self.pm_save = saved  # pci_store_saved_state()
        elif needs_restore and self.pm_save is not None:
            self.hw.restore_state(self.pm_save)  # pci_load_and_free_saved_state + restore
            self.pm_save = None

    def _intx_line(self, level: bool) -> None:
        """The device's INTx line changed (hw ``on_intx`` callback, machine lock held)."""
        if level:
            intrs.vfio_virqfd_poll_all(self)
            intrs.vfio_intx_handler(self)

    def _entry(self) -> None:
        """Every call into the device first handles unmask eventfds written meanwhile."""
        intrs.vfio_virqfd_poll_all(self)

    # -- sanitizer (SPEC §13.8) ---------------------------------------------------------------

    def _dma_fault(self, rec: Any) -> None:
        """Fault hook: a DMA of this device faulted while a VFIO client has it open."""
        if rec.device != self.name or not self.opened:
            return
        self.machine.report(
            san.DMA_FAULT,
            f"{self.name}: device {rec.direction} of {rec.length:#x} bytes at iova "
            f"{rec.iova:#x} faulted ({rec.reason}): the client programmed the device with an "
            "address its container does not map for that access",
            device=self.name, rid=rec.rid, iova=rec.iova, length=rec.length,
            direction=rec.direction, reason=rec.reason)

    def _sanitize_close(self) -> None:
        """At the last close: eventfds still registered.  The kernel tears them down; the
        client most likely forgot SET_IRQS(DATA_NONE, count 0).  Those whose eventfd the
        client had already closed get their own report: their interrupts went nowhere."""
        held = intrs.registered_eventfds(self)
        if not held:
            return
        leaked: list[dict[str, Any]] = []
        closed: list[dict[str, Any]] = []
        for index, vector, role, ev in held:
            entry = {"index": index, "vector": vector, "role": role, "fd": ev.client_fd}
            (closed if ev.client_holds() is False else leaked).append(entry)
        if leaked:
            what = ", ".join(f"{e['index']} {e['role']} {e['vector']} (fd {e['fd']})"
                             for e in leaked)
            self.machine.report(
                san.IRQ_LEAK,
                f"{self.name}: device closed with eventfds still registered: {what}; the "
                "kernel tears them down, but the client never disabled them",
                device=self.name, eventfds=leaked)
        for e in closed:
            self.machine.report(
                san.EVENTFD_CLOSED,
                f"{self.name}: {e['index']} {e['role']} {e['vector']} was still registered "
                f"with eventfd fd {e['fd']}, which the client had closed: its interrupts "
                "went nowhere",
                device=self.name, **e)

    # -- reset (pci_try_reset_function / pci_reset_bus with save and restore of state) ------

    def try_reset_function(self) -> None:
        """``pci_try_reset_function()``: the device returns to its power-on state; its config
        header and MSI/MSI-X programming are saved before and restored after
        (``PciFunction.reset_function``)."""
        self.hw.reset_function()

    # -- open / close (vfio_pci_core_enable / vfio_pci_core_disable) --------------------------

    def open_device(self) -> None:
        """``vfio_pci_core_enable()`` + ``vfio_pci_core_finish_enable()``: bus mastering off,
        the device enabled (memory space on for its memory BARs), reset, its state saved,
        INTx disable cleared, the virtual config space built; SPEC §11.2 (command 0x0002)."""
        hw = self.hw
        cmd = hw.cfg_read(R.PCI_COMMAND, 2)
        hw.cfg_write(R.PCI_COMMAND, 2, cmd & ~R.PCI_COMMAND_MASTER)  # pci_clear_master
        # pci_enable_device(): decode every resource the device has.
        cmd = hw.cfg_read(R.PCI_COMMAND, 2)
        for i in range(R.PCI_STD_NUM_BARS):
            if self.bar_len(i):
                cmd |= R.PCI_COMMAND_MEMORY if hw.bars[i].mem else R.PCI_COMMAND_IO
        hw.cfg_write(R.PCI_COMMAND, 2, cmd)
        self.reset_works = callable(getattr(hw, "reset", None))
        if self.reset_works:
            self.try_reset_function()
        self._saved_state = hw.save_state()  # pci_save_state(); pci_store_saved_state()
        self.pci_2_3 = True  # pci_intx_mask_supported(): the models implement DisINTx
        cmd = hw.cfg_read(R.PCI_COMMAND, 2)
        if self.pci_2_3 and cmd & R.PCI_COMMAND_INTX_DISABLE:
            hw.cfg_write(R.PCI_COMMAND, 2, cmd & ~R.PCI_COMMAND_INTX_DISABLE)
        cfg.vfio_config_init(self)
        msix_pos = hw.find_cap(R.PCI_CAP_ID_MSIX)
        if msix_pos:
            flags = hw.cfg_read(msix_pos + R.PCI_MSIX_FLAGS, 2)
            table = hw.cfg_read(msix_pos + R.PCI_MSIX_TABLE, 4)
            self.msix_bar = table & R.PCI_MSIX_TABLE_BIR
            self.msix_offset = table & R.PCI_MSIX_TABLE_OFFSET
            self.msix_size = ((flags & R.PCI_MSIX_FLAGS_QSIZE) + 1) * 16
            # §2.7 #16: dynamic MSI-X allocation (x86 MSI domains, 6.5 and later).
            self.has_dyn_msix = self.machine.kind == "type1" and not self.profile.before("6.5")
        else:
            self.msix_bar = 0xFF
            self.has_dyn_msix = False
        self.has_vga = False
        self._probe_mmaps()
        self.opened = True

    def _probe_mmaps(self) -> None:
        """``vfio_pci_probe_mmaps()``: memory BARs are mmap-able (page sized, or sub-page at
        a page-aligned address); the model reports it only with the ``bar_mmap`` option
        (SPEC §11.3, Appendix B)."""
        enabled = bool(getattr(self.machine.options, "bar_mmap", False))
        for i in range(R.PCI_STD_NUM_BARS):
            self.bar_mmap_supported[i] = bool(enabled and self.bar_len(i) and self.hw.bars[i].mem)

    def close_device(self) -> None:
        """``vfio_pci_core_close_device()`` -> ``vfio_pci_core_disable()``: bus mastering off,
        every interrupt torn down (eventfds put), virtual INTx disable forgotten, config
        state dropped, the device reset and its state at open restored; then the ERR/REQ
        triggers go."""
        self._sanitize_close()
        self._runtime_pm_exit()  # vfio_pci_runtime_pm_exit()
        self.set_power_state(PCI_D0)
        self._pm_suspended = False
        self.pm_intx_masked = False
        hw = self.hw
        cmd = hw.cfg_read(R.PCI_COMMAND, 2)
        hw.cfg_write(R.PCI_COMMAND, 2, cmd & ~R.PCI_COMMAND_MASTER)
        if not intrs.is_irq_none(self):
            intrs.vfio_pci_set_irqs_ioctl(self, _NoProcess(), V.VFIO_IRQ_SET_DATA_NONE
                                          | V.VFIO_IRQ_SET_ACTION_TRIGGER, self.irq_type, 0, 0,
                                          b"")
        self.virq_disabled = False
        cfg.vfio_config_free(self)
        self.needs_reset = True
        hw.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_INTX_DISABLE)
        if self.reset_works:
            hw.reset()  # __pci_reset_function_locked()
            self.needs_reset = False
        if self._saved_state is not None:
            hw.restore_state(self._saved_state)  # pci_restore_state()
            self._saved_state = None
        # pci_disable_device(): bus mastering off
        cmd = hw.cfg_read(R.PCI_COMMAND, 2)
        hw.cfg_write(R.PCI_COMMAND, 2, cmd & ~R.PCI_COMMAND_MASTER)
        for attr in ("err_trigger", "req_trigger"):
            t = getattr(self, attr)
            if t is not None:
                t.put()
                setattr(self, attr, None)
        self.opened = False

    # -- runtime PM and the low power features ----------------------------------------------

    def pm_runtime_get(self) -> None:
        """``pm_runtime_resume_and_get()`` at the start of an ioctl or a region access: a
        device left suspended by a low power entry resumes first."""
        self._pm_active_calls += 1
        if self._pm_suspended:
            self._pm_suspended = False
            self._runtime_resume()

    def pm_runtime_put(self) -> None:
        """``pm_runtime_put()`` at the end of the call: with a low power entry engaged no
        one holds the device any more, so it suspends (``vfio_pci_core_runtime_suspend``).

        The model suspends as the call returns; the kernel's idle work does it shortly
        after.  The device itself is not put in D3hot (its state is saved and restored
        around it by the PCI core, which the model leaves out).
        """
        self._pm_active_calls -= 1
        if (not self._pm_active_calls and self.pm_runtime_engaged and self.opened
                and not self._pm_suspended):
            self._pm_suspended = True
            # If INTx is enabled, mask it while suspended, unless the user already did.
            self.pm_intx_masked = (intrs.is_intx(self) and intrs.vfio_pci_intx_mask(self))

    def _runtime_resume(self) -> None:
        """``vfio_pci_core_runtime_resume()``: a wakeup eventfd is signalled and ends the low
        power state; INTx masked by the suspend is unmasked."""
        if self.pm_wake_eventfd_ctx is not None:
            self.pm_wake_eventfd_ctx.signal()
            self._runtime_pm_exit()
        if self.pm_intx_masked:
            self.pm_intx_masked = False
            intrs.vfio_pci_intx_unmask(self)

    def _runtime_pm_exit(self) -> None:
        """``__vfio_pci_runtime_pm_exit()``."""
        if self.pm_runtime_engaged:
            self.pm_runtime_engaged = False
            if self.pm_wake_eventfd_ctx is not None:
                self.pm_wake_eventfd_ctx.put()
                self.pm_wake_eventfd_ctx = None

    def _runtime_pm_entry(self, efdctx: Any) -> int:
        """``vfio_pci_runtime_pm_entry()``: EINVAL when already engaged."""
        if self.pm_runtime_engaged:
            raise kerr(errno.EINVAL)
        self.pm_runtime_engaged = True
        self.pm_wake_eventfd_ctx = efdctx
        return 0

    def device_feature(self, proc: Process, flags: int, arg: UserArg, data_off: int,
                       argsz: int) -> int:
        """``vfio_pci_core_ioctl_feature()``: the low power features; the VF token only on an
        SR-IOV PF (no modelled device is one: ENOTTY); anything else ENOTTY."""
        feature = flags & V.VFIO_DEVICE_FEATURE_MASK
        if feature == V.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY:
            # vfio_pci_core_pm_entry()
            if vfio_check_feature(flags, argsz, V.VFIO_DEVICE_FEATURE_SET, 0) != 1:
                return 0
            return self._runtime_pm_entry(None)
        if feature == V.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP:
            # vfio_pci_core_pm_entry_with_wakeup()
            size = sizeof(V.vfio_device_low_power_entry_with_wakeup)
            if vfio_check_feature(flags, argsz, V.VFIO_DEVICE_FEATURE_SET, size) != 1:
                return 0
            entry = V.vfio_device_low_power_entry_with_wakeup.from_buffer_copy(
                arg.read(data_off, size))
            if entry.wakeup_eventfd < 0:
                raise kerr(errno.EINVAL)
            efdctx = proc.eventfd_get(entry.wakeup_eventfd)
            try:
                return self._runtime_pm_entry(efdctx)
            except OSError:
                efdctx.put()
                raise
        if feature == V.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT:
            # vfio_pci_core_pm_exit()
            if vfio_check_feature(flags, argsz, V.VFIO_DEVICE_FEATURE_SET, 0) != 1:
                return 0
            self._runtime_pm_exit()
            return 0
        # VFIO_DEVICE_FEATURE_PCI_VF_TOKEN: vfio_pci_core_feature_token() without vf_token
        raise kerr(errno.ENOTTY)

    # -- ioctl ----------------------------------------------------------------------------

    def ioctl(self, proc: Process, request: int, arg: UserArg) -> int:
        """``vfio_pci_core_ioctl()``: one handler per ioctl, ENOTTY for anything else
        (QUERY_GFX_PLANE, GET_GFX_DMABUF and IOEVENTFD included: SPEC §3.2, Appendix B).
        VFIO_DEVICE_FEATURE never gets here: the core serves it (``DeviceFile.ioctl``)."""
        self._entry()
        handler = _IOCTLS.get(request)
        if handler is None:
            raise kerr(errno.ENOTTY)
        return handler(self, proc, arg)

    def ioctl_get_info(self, proc: Process, arg: UserArg) -> int:
        """``vfio_pci_ioctl_get_info()``: flags PCI | RESET, 9 regions, 5 irqs, no caps.
        Written back: ``min(argsz, 24)`` bytes; before 6.6, 16 if argsz < 20 else 20
        (SPEC §2.7 #13)."""
        minsz = offsetofend(V.vfio_device_info, "num_irqs")
        info = read_struct(arg, V.vfio_device_info, minsz)
        if info.argsz < minsz:
            raise kerr(errno.EINVAL)
        argsz = info.argsz
        # 16 (before cap_offset), 20 (before 6.6's pad) and 24 are all real header sizes.
        san.check_argsz(self.machine, "VFIO_DEVICE_GET_INFO", "vfio_device_info", argsz,
                        (minsz, offsetofend(V.vfio_device_info, "cap_offset"),
                         sizeof(V.vfio_device_info)), room=True)
        out = V.vfio_device_info()
        out.argsz = argsz
        out.flags = V.VFIO_DEVICE_FLAGS_PCI
        if self.reset_works:
            out.flags |= V.VFIO_DEVICE_FLAGS_RESET
        out.num_regions = V.VFIO_PCI_NUM_REGIONS
        out.num_irqs = V.VFIO_PCI_NUM_IRQS
        n = fixed_part_size(self.profile, argsz, minsz,
                            offsetofend(V.vfio_device_info, "cap_offset"),
                            sizeof(V.vfio_device_info))
        write_struct(arg, out, n)
        return 0

    def ioctl_get_region_info(self, proc: Process, arg: UserArg) -> int:
        """``vfio_pci_ioctl_get_region_info()``."""
        from vfiosim.kernel.caps import VfioInfoCap, chain_aligned, place_caps

        minsz = offsetofend(V.vfio_region_info, "offset")
        info = read_struct(arg, V.vfio_region_info, minsz)
        if info.argsz < minsz:
            raise kerr(errno.EINVAL)
        caps = VfioInfoCap(aligned=chain_aligned(self.profile))
        index = info.index
        if index == V.VFIO_PCI_CONFIG_REGION_INDEX:
            info.offset = V.VFIO_PCI_INDEX_TO_OFFSET(index)
            info.size = self.cfg_size
            info.flags = V.VFIO_REGION_INFO_FLAG_READ | V.VFIO_REGION_INFO_FLAG_WRITE
        elif V.VFIO_PCI_BAR0_REGION_INDEX <= index <= V.VFIO_PCI_BAR5_REGION_INDEX:
            info.offset = V.VFIO_PCI_INDEX_TO_OFFSET(index)
            info.size = self.bar_len(index)
            if not info.size:
                info.flags = 0
            else:
                info.flags = V.VFIO_REGION_INFO_FLAG_READ | V.VFIO_REGION_INFO_FLAG_WRITE
                if self.bar_mmap_supported[index]:
                    info.flags |= V.VFIO_REGION_INFO_FLAG_MMAP
                    if index == self.msix_bar:
                        caps.add(V.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1)
        elif index == V.VFIO_PCI_ROM_REGION_INDEX:
            # No preset device has an expansion ROM (pci_resource_len(ROM) == 0).
            info.offset = V.VFIO_PCI_INDEX_TO_OFFSET(index)
            info.flags = 0
            info.size = 0
        elif index == V.VFIO_PCI_VGA_REGION_INDEX:
            if not self.has_vga:
                raise kerr(errno.EINVAL)
        else:
            # No device specific regions: index >= VFIO_PCI_NUM_REGIONS + 0.
            raise kerr(errno.EINVAL)
        place = place_caps(caps, info.argsz, sizeof(V.vfio_region_info))
        if place.has_caps:
            info.flags |= V.VFIO_REGION_INFO_FLAG_CAPS
            info.argsz = place.argsz
            info.cap_offset = place.cap_offset
            if place.data:
                arg.write(place.cap_offset, place.data)
        write_struct(arg, info, minsz)
        return 0

    def get_irq_count(self, irq_type: int) -> int:
        """``vfio_pci_get_irq_count()``: INTx from the virtual pin register, MSI/MSI-X from
        the device's capabilities."""
        hw = self.hw
        if irq_type == V.VFIO_PCI_INTX_IRQ_INDEX:
            return 1 if self.vconfig[R.PCI_INTERRUPT_PIN] else 0  # the virtual pin
        if irq_type == V.VFIO_PCI_MSI_IRQ_INDEX:
            pos = hw.find_cap(R.PCI_CAP_ID_MSI)
            if pos:
                flags = hw.cfg_read(pos + R.PCI_MSI_FLAGS, 2)
                return 1 << ((flags & R.PCI_MSI_FLAGS_QMASK) >> 1)
            return 0
        if irq_type == V.VFIO_PCI_MSIX_IRQ_INDEX:
            pos = hw.find_cap(R.PCI_CAP_ID_MSIX)
            if pos:
                flags = hw.cfg_read(pos + R.PCI_MSIX_FLAGS, 2)
                return (flags & R.PCI_MSIX_FLAGS_QSIZE) + 1
            return 0
        if irq_type == V.VFIO_PCI_ERR_IRQ_INDEX:
            return 1 if hw.is_pcie else 0
        if irq_type == V.VFIO_PCI_REQ_IRQ_INDEX:
            return 1
        return 0

    def ioctl_get_irq_info(self, proc: Process, arg: UserArg) -> int:
        """``vfio_pci_ioctl_get_irq_info()``: ERR exists only on PCI Express; MSI-X without
        NORESIZE where vectors can be added while enabled (SPEC §2.7 #16)."""
        minsz = offsetofend(V.vfio_irq_info, "count")
        info = read_struct(arg, V.vfio_irq_info, minsz)
        if info.argsz < minsz or info.index >= V.VFIO_PCI_NUM_IRQS:
            raise kerr(errno.EINVAL)
        san.check_argsz(self.machine, "VFIO_DEVICE_GET_IRQ_INFO", "vfio_irq_info", info.argsz,
                        (sizeof(V.vfio_irq_info),))
        if info.index == V.VFIO_PCI_ERR_IRQ_INDEX and not self.hw.is_pcie:
            raise kerr(errno.EINVAL)
        info.flags = V.VFIO_IRQ_INFO_EVENTFD
        info.count = self.get_irq_count(info.index)
        if info.index == V.VFIO_PCI_INTX_IRQ_INDEX:
            info.flags |= V.VFIO_IRQ_INFO_MASKABLE | V.VFIO_IRQ_INFO_AUTOMASKED
        elif info.index != V.VFIO_PCI_MSIX_IRQ_INDEX or not self.has_dyn_msix:
            info.flags |= V.VFIO_IRQ_INFO_NORESIZE
        write_struct(arg, info, minsz)
        return 0

    def ioctl_set_irqs(self, proc: Process, arg: UserArg) -> int:
        return intrs.vfio_pci_ioctl_set_irqs(self, proc, arg)

    def ioctl_reset(self, proc: Process, arg: UserArg) -> int:
        """``vfio_pci_ioctl_reset()``: EINVAL without reset support; the device returns to
        its power-on state, the virtual config and the IRQ setup are kept."""
        if not self.reset_works:
            raise kerr(errno.EINVAL)
        self.set_power_state(PCI_D0)
        self.try_reset_function()
        return 0

    # -- hot reset --------------------------------------------------------------------------

    def _bus_devices(self) -> list[Any]:
        """The devices a secondary bus reset of this device's bus affects."""
        return [d for d in self.machine.devices
                if _parse_bdf(d.name)[:2] == (self.segment, self.bus)]

    def ioctl_get_pci_hot_reset_info(self, proc: Process, arg: UserArg) -> int:
        """``vfio_pci_ioctl_get_pci_hot_reset_info()``: the affected devices are counted
        first; when ``argsz`` has no room for all of them only the header (``flags`` 0,
        ``count``) is written and the call fails with ENOSPC (SPEC §3.7 rule 6), else the
        device array and then the header."""
        minsz = offsetofend(V.vfio_pci_hot_reset_info, "count")
        hdr = read_struct(arg, V.vfio_pci_hot_reset_info, minsz)
        if hdr.argsz < minsz:
            raise kerr(errno.EINVAL)
        hdr.flags = 0
        devices = self._bus_devices()  # vfio_pci_for_each_slot_or_bus(vfio_pci_count_devs)
        size = sizeof(V.vfio_pci_dependent_device)
        if len(devices) > (hdr.argsz - sizeof(V.vfio_pci_hot_reset_info)) // size:
            hdr.count = len(devices)
            write_struct(arg, hdr, minsz)
            raise kerr(errno.ENOSPC)
        data = bytearray()
        for d in devices:  # vfio_pci_fill_devs()
            seg, bus, devfn = _parse_bdf(d.name)
            dep = V.vfio_pci_dependent_device(group_id=d.group, segment=seg, bus=bus,
                                              devfn=devfn)
            data += bytes(dep)
        arg.write(minsz, bytes(data))
        hdr.count = len(devices)
        write_struct(arg, hdr, minsz)
        return 0

    def ioctl_pci_hot_reset(self, proc: Process, arg: UserArg) -> int:
        """``vfio_pci_ioctl_pci_hot_reset()`` with ``vfio_pci_ioctl_pci_hot_reset_groups()``
        and ``vfio_pci_dev_set_hot_reset()``; checks in the kernel's order (SPEC §11.4)."""
        minsz = offsetofend(V.vfio_pci_hot_reset, "count")
        hdr = read_struct(arg, V.vfio_pci_hot_reset, minsz)
        if hdr.argsz < minsz or hdr.flags:
            raise kerr(errno.EINVAL)
        # A device opened through its group must name the groups (count 0 is the cdev way).
        if not hdr.count:
            raise kerr(errno.EINVAL)
        devices = self._bus_devices()
        if hdr.count > len(devices):
            raise kerr(errno.EINVAL)
        # Sanitizer: argsz should cover exactly the header and count group fds.
        san.check_argsz(self.machine, "VFIO_DEVICE_PCI_HOT_RESET", "vfio_pci_hot_reset",
                        hdr.argsz, (minsz + 4 * hdr.count,))
        raw = arg.read(minsz, 4 * hdr.count)  # the kernel reads count fds whatever argsz is
        fds = struct.unpack(f"<{hdr.count}i", raw)
        groups = []
        for fd in fds:
            f = proc.fget(fd)  # EBADF
            if f is None or getattr(f, "kind", None) != "group":
                raise kerr(errno.EINVAL)  # !vfio_file_is_group()
            groups.append(f.group)
        # vfio_pci_dev_set_resettable(): every device on the bus must be a vfio-pci device.
        if any(not d.is_vfio for d in devices):
            raise kerr(errno.EINVAL)
        # Every device of the set must belong to one of the groups (vfio_dev_in_groups).
        for d in devices:
            if not any(d in g.devices for g in groups):
                raise kerr(errno.EINVAL)
        registry = _DEVICES.get(self.machine, {})
        for d in devices:
            vdev = registry.get(d.name)
            if vdev is not None:
                vdev.set_power_state(PCI_D0)  # vfio_pci_set_power_state(vdev, PCI_D0)
                vdev.try_reset_function()
            else:
                d.hw.reset()
        return 0

    # -- read / write (vfio_pci_rw) -----------------------------------------------------------

    def read(self, proc: Process, count: int, offset: int) -> bytes:
        """``vfio_pci_core_read()``: count 0 reads nothing, whatever the offset."""
        if not count:
            return b""
        self._entry()
        buf = bytearray(count)
        done = self._rw(buf, offset, False)
        return bytes(buf[:done])

    def write(self, proc: Process, data: bytes, offset: int) -> int:
        """``vfio_pci_core_write()``."""
        if not len(data):
            return 0
        self._entry()
        return self._rw(bytearray(data), offset, True)

    def _rw(self, buf: bytearray, pos: int, iswrite: bool) -> int:
        """``vfio_pci_rw()``: by region index."""
        index = V.VFIO_PCI_OFFSET_TO_INDEX(pos)
        if index >= V.VFIO_PCI_NUM_REGIONS:
            raise kerr(errno.EINVAL)
        off = pos & V.VFIO_PCI_OFFSET_MASK
        self.pm_runtime_get()
        try:
            if index == V.VFIO_PCI_CONFIG_REGION_INDEX:
                return cfg.vfio_pci_config_rw(self, buf, off, iswrite)
            if index == V.VFIO_PCI_ROM_REGION_INDEX:
                if iswrite:
                    raise kerr(errno.EINVAL)
                return self._bar_rw(buf, index, off, False)
            if index <= V.VFIO_PCI_BAR5_REGION_INDEX:
                return self._bar_rw(buf, index, off, iswrite)
            # VGA: vfio_pci_vga_rw() without VGA
            raise kerr(errno.EINVAL)
        finally:
            self.pm_runtime_put()

    def _bar_rw(self, buf: bytearray, bar: int, pos: int, iswrite: bool) -> int:
        """``vfio_pci_bar_rw()``: EINVAL at or past the end (every offset of an absent BAR),
        a count past the end is truncated; the MSI-X table of the MSI-X BAR is excluded
        (reads all-ones, writes dropped)."""
        end = 0 if bar == V.VFIO_PCI_ROM_REGION_INDEX else self.bar_len(bar)
        if not end or pos >= end:
            raise kerr(errno.EINVAL)
        count = min(len(buf), end - pos)
        x_start = x_end = 0
        if bar == self.msix_bar:
            x_start = self.msix_offset
            x_end = self.msix_offset + self.msix_size
        test_mem = bar == V.VFIO_PCI_ROM_REGION_INDEX or self.hw.bars[bar].mem
        return self._do_io_rw(bar, test_mem, buf, pos, count, x_start, x_end, iswrite)

    def _fill_size(self, fillable: int, off: int, bar: int) -> int:
        """The piece size: naturally aligned 8, 4, 2 or 1 bytes (ROM at most 4); before 6.14
        at most 4 (SPEC §2.7 #17)."""
        top = 4 if (self.profile.before("6.14") or bar == V.VFIO_PCI_ROM_REGION_INDEX) else 8
        size = top
        while size > 1:
            if fillable >= size and not off % size:
                return size
            size //= 2
        return 1

    def _do_io_rw(self, bar: int, test_mem: bool, buf: bytearray, off: int, count: int,
                  x_start: int, x_end: int, iswrite: bool) -> int:
        """``vfio_pci_core_do_io_rw()``: an error part-way returns the error (the pieces
        before it have reached the device)."""
        done = 0
        while count:
            if off < x_start:
                fillable = min(count, x_start - off)
            elif off >= x_end:
                fillable = count
            else:
                fillable = 0
            if fillable:
                n = self._fill_size(fillable, off, bar)
                if test_mem and not self._memory_enabled():
                    raise kerr(errno.EIO)
                if iswrite:
                    val = int.from_bytes(buf[done:done + n], "little")
                    self.hw.bar_write(bar, off, n, val)
                else:
                    val = self.hw.bar_read(bar, off, n) & ((1 << (8 * n)) - 1)
                    buf[done:done + n] = val.to_bytes(n, "little")
            else:
                # Fill reads with -1, drop writes
                n = min(count, x_end - off)
                if not iswrite:
                    buf[done:done + n] = b"\xff" * n
            count -= n
            done += n
            off += n
        return done

    # -- mmap ------------------------------------------------------------------------------

    def mmap(self, proc: Process, offset: int, length: int, prot: int, flags: int) -> MmapRegion:
        """``vfio_pci_core_mmap()``: only BARs reported with the MMAP flag."""
        if length <= 0 or offset % PAGE_SIZE:
            raise kerr(errno.EINVAL)  # do_mmap()
        index = V.VFIO_PCI_OFFSET_TO_INDEX(offset)
        if index >= V.VFIO_PCI_NUM_REGIONS:
            raise kerr(errno.EINVAL)
        if not flags & _mmap.MAP_SHARED:
            raise kerr(errno.EINVAL)
        if index >= V.VFIO_PCI_ROM_REGION_INDEX:
            raise kerr(errno.EINVAL)
        if not self.bar_mmap_supported[index]:
            raise kerr(errno.EINVAL)
        phys_len = (self.bar_len(index) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        req_start = offset & V.VFIO_PCI_OFFSET_MASK
        if req_start + length > phys_len:
            raise kerr(errno.EINVAL)
        return MmapRegion(index, req_start, length)


class _NoProcess:
    """The kernel's own calls into SET_IRQS (close) never look up an fd."""

    pid = 0

    def eventfd_get(self, fd: int) -> Any:
        raise kerr(errno.EBADF)

    def fget(self, fd: int) -> Any:
        raise kerr(errno.EBADF)


_IOCTLS: dict[int, Any] = {
    V.VFIO_DEVICE_GET_INFO: VfioPciDevice.ioctl_get_info,
    V.VFIO_DEVICE_GET_IRQ_INFO: VfioPciDevice.ioctl_get_irq_info,
    V.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: VfioPciDevice.ioctl_get_pci_hot_reset_info,
    V.VFIO_DEVICE_GET_REGION_INFO: VfioPciDevice.ioctl_get_region_info,
    V.VFIO_DEVICE_PCI_HOT_RESET: VfioPciDevice.ioctl_pci_hot_reset,
    V.VFIO_DEVICE_RESET: VfioPciDevice.ioctl_reset,
    V.VFIO_DEVICE_SET_IRQS: VfioPciDevice.ioctl_set_irqs,
}
