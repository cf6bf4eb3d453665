"""The VFIO PAMU backend and the windowed PAMU domain under it.

Hardware constraints first, as vfio_iommu_fsl_pamu.c states them:

* each LIODN has one aperture: a power-of-two sized, naturally aligned IOVA range, at most
  2^36 bytes and ending at or below 2^36 − 1 (the e500mc physical address width);
* the aperture is split into 1 or more windows; the count is a power of two, at most 256;
* window k covers ``[aperture_start + k·window_size, aperture_start + (k+1)·window_size)``
  with ``window_size = aperture size / count``;
* the mapped region of a window is a power of two of at least 4 KiB (the PAMU page), at most
  the window size, and its physical address is naturally aligned to the mapped size;
* there are no page tables: a window maps one physically contiguous range or nothing.

Two layers live here, as in the sources:

:class:`FslDmaDomain`
    the window policy of the windowed-era PAMU IOMMU driver (drivers/iommu/fsl_pamu_domain.c,
    v3.11–v5.12): ``configure_domain_geometry``, ``fsl_pamu_set_windows``,
    ``fsl_pamu_window_enable``/``_disable``, ``configure_domain_stash``/``update_liodn_stash``,
    ``configure_domain_dma_state``, attach/detach with window replay.  It programs the
    hardware (:mod:`vfiosim.hw.pamu`) only through the fsl_pamu.c functions, the way
    fsl_pamu_domain.c calls them, so an encoding bug shows up as a wrong translation.
:class:`PamuBackend`
    the SDK's VFIO backend (drivers/vfio/vfio_iommu_fsl_pamu.c): the container ioctls, DMA
    mappings, MSI banks -- with the changes of SPEC §6: the auto MSI mode (option A, the
    default), real errnos (``sdk_swallow_errors`` restores the SDK's 0 returns), and
    VFIO_IOMMU_GET_INFO in auto mode.

MSI vectors: when the last DMA mapping goes in auto mode, the backend looks at the devices of
its groups (``PciFunction.msi_kind``, the enable bits vfio-pci programmed); if MSI or MSI-X is
enabled, the bank windows vanish under live vectors and a sanitizer report is emitted (kind
``msi_unmapped``, ``machine.report``; SPEC §6.7.1, §13.8).  The handlers also run the
sanitizer's argsz, padding and alignment checks (kernel/sanitizer.py).

SPEC §6 (backend), §7.3 (domain state → entries), §9.1 (``msi_address``), §10.3 (contiguity).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from vfiosim.hw.pamu import PAMU_NOT_DEFINED, PAMU_PAGE_SHIFT, PAMU_PAGE_SIZE, prot_to_ap
from vfiosim.kernel import caps
from vfiosim.kernel import sanitizer as san
from vfiosim.kernel.iommu import IommuBackend, IommuDriver
from vfiosim.kernel.uaccess import kerr, read_struct, write_struct
from vfiosim.uapi import vfio as V
from vfiosim.uapi import vfio_pamu as P

if TYPE_CHECKING:
    from vfiosim.hw.pamu import Pamu
    from vfiosim.kernel.group import Group
    from vfiosim.kernel.uaccess import Process, UserArg
    from vfiosim.machine import Machine

# include/linux/iommu.h: the prot bits of the IOMMU API (kernel-internal, not uAPI).
IOMMU_READ = 1 << 0
IOMMU_WRITE = 1 << 1

#: ~(u32)0: "not defined" for omi, snoopid and stashid in the fsl_pamu.c calls.
NOT_DEFINED = PAMU_NOT_DEFINED

U64_MAX = (1 << 64) - 1


def is_power_of_2(n: int) -> bool:
    """is_power_of_2() (include/linux/log2.h): 0 is not."""
    return n > 0 and (n & (n - 1)) == 0


def ilog2(n: int) -> int:
    """ilog2() (include/linux/log2.h) of a positive integer: the index of its top bit."""
    return n.bit_length() - 1


# ---------------------------------------------------------------------------------------------
# fsl_pamu_domain.c: the windowed domain


@dataclass
class DmaWindow:
    """``struct dma_window`` (fsl_pamu_domain.h): one window of the domain."""

    paddr: int = 0
    size: int = 0
    prot: int = 0  # PAACE AP encoding (query 1 | update 2)
    valid: bool = False


class FslDmaDomain:
    """``struct fsl_dma_domain`` and the iommu_ops of fsl_pamu_domain.c (windowed era).

    Every method raises ``kerr(...)`` where the kernel function returns ``-E...``.
    """

    def __init__(self, pamu: Pamu) -> None:
        self.pamu = pamu
        # pamu_get_max_subwin_cnt(): 1 << (1 + PC3.MWCE); PAACE_NUMBER_ENTRIES: the PAACT size
        max_subwin_cnt = pamu.pamu_get_max_subwin_cnt()
        self.max_subwin_cnt = max_subwin_cnt
        self.paace_entries = pamu.paact_entries
        # fsl_pamu_domain_init(): default geometry, the whole 36-bit space.
        self.aperture_start = 0
        self.aperture_end = (1 << 36) - 1
        self.geom_size = 0  # 0 until DOMAIN_ATTR_GEOMETRY is set
        # iommu_alloc_dma_domain(): win_cnt = the maximum, no window array yet.
        self.win_cnt = max_subwin_cnt
        self.win_arr: list[DmaWindow] | None = None
        self.enabled = False
        self.mapped = 0
        self.stash_id = NOT_DEFINED
        self.snoop_id = NOT_DEFINED
        self.dma_stash = (0, 0)  # struct pamu_stash_attribute {cpu, cache}
        self.liodns: list[int] = []  # dma_domain->devices, one entry per LIODN

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _ok(ret: int) -> None:
        """fsl_pamu.c returns 0 or -errno; turn a failure into the kernel's return."""
        if ret:
            raise kerr(-ret)

    def subwin_size(self) -> int:
        """``geom_size >> ilog2(win_cnt)``: the window size (fsl_pamu_window_enable)."""
        return self.geom_size >> ilog2(self.win_cnt)

    # -- per-LIODN programming (pamu_set_liodn, map_liodn, update_liodn) ---------------------
    def pamu_set_liodn(self, liodn: int, win_cnt: int) -> None:
        """pamu_set_liodn(): disable the LIODN, program the geometry and ``win_cnt`` windows
        (0 = one window), every subwindow configured but disabled.

        [decision D18] The SPAACE block of a previous configuration is freed first; the
        kernel freed it only at detach, so repeated WINDOWS exhausted the SPAACT.
        """
        self._ok(self.pamu.pamu_disable_liodn(liodn))
        self.pamu.pamu_free_subwins(liodn)
        self._ok(self.pamu.pamu_config_ppaace(
            liodn, self.aperture_start, self.geom_size, NOT_DEFINED, 0,
            self.snoop_id, self.stash_id, win_cnt, 0))
        if win_cnt > 1:
            subwin_size = self.geom_size >> ilog2(win_cnt)
            for i in range(win_cnt):
                self._ok(self.pamu.pamu_disable_spaace(liodn, i))
                self._ok(self.pamu.pamu_config_spaace(
                    liodn, win_cnt, i, subwin_size, NOT_DEFINED, 0,
                    self.snoop_id, self.stash_id, 0, 0))

    def update_liodn(self, liodn: int, wnd_nr: int) -> None:
        """update_liodn(): write window ``wnd_nr`` into the LIODN's entries."""
        assert self.win_arr is not None
        wnd = self.win_arr[wnd_nr]
        rpn = wnd.paddr >> PAMU_PAGE_SHIFT
        if self.win_cnt > 1:
            self._ok(self.pamu.pamu_config_spaace(
                liodn, self.win_cnt, wnd_nr, wnd.size, NOT_DEFINED, rpn,
                self.snoop_id, self.stash_id, 1 if wnd_nr > 0 else 0, wnd.prot))
        else:
            self._ok(self.pamu.pamu_config_ppaace(
                liodn, self.aperture_start, wnd.size, NOT_DEFINED, rpn,
                self.snoop_id, self.stash_id, 0, wnd.prot))

    def map_liodn(self, liodn: int) -> None:
        """map_liodn(): replay every valid window into a LIODN (map_subwins / map_win)."""
        assert self.win_arr is not None
        if self.win_cnt > 1:
            for i, wnd in enumerate(self.win_arr):
                if wnd.valid:
                    self.update_liodn(liodn, i)
        else:
            self.update_liodn(liodn, 0)

    def update_liodn_stash(self, liodn: int, val: int) -> None:
        """update_liodn_stash(): CID of the primary entry and of every SPAACE."""
        if self.win_arr is None:
            # "Windows not configured, stash destination update failed"
            raise kerr(errno.EINVAL)
        for i in range(self.win_cnt):
            self._ok(self.pamu.pamu_update_paace_stash(liodn, i, val))

    # -- iommu_ops ---------------------------------------------------------------------------
    def attach_liodn(self, liodn: int) -> None:
        """handle_attach_device() for one LIODN.

        WINDOWS set: the LIODN is programmed (disabled first) and the valid windows are
        replayed; it stays disabled until the next domain enable [decision D18].  WINDOWS not
        set: [decision D18] the LIODN is made invalid (V = 0) instead of keeping the boot
        identity window as the kernel does (SPEC Appendix B).
        """
        if liodn >= self.paace_entries:
            raise kerr(errno.EINVAL)
        self.liodns.append(liodn)
        try:
            if self.win_arr is not None:
                self.pamu_set_liodn(liodn, self.win_cnt if self.win_cnt > 1 else 0)
                if self.mapped:
                    self.map_liodn(liodn)
            else:
                self._ok(self.pamu.pamu_disable_liodn(liodn))
        except OSError:
            self.detach_liodn(liodn)
            raise

    def detach_liodn(self, liodn: int) -> None:
        """remove_device_ref(): subwindows freed, LIODN invalid (V = 0) (SPEC §7.1)."""
        if liodn in self.liodns:
            self.liodns.remove(liodn)
        self.pamu.pamu_free_subwins(liodn)
        self.pamu.pamu_disable_liodn(liodn)

    def configure_domain_geometry(self, start: int, end: int) -> None:
        """configure_domain_geometry() with force_aperture = 1 (the SDK always passed it).

        check_size() first, then the enabled state.  [decision D4] ``end`` ≤ 2^36 − 1.
        [proposed, Appendix A #15] Setting it after WINDOWS unconfigures the windows: the
        kernel kept a stale window array and stale LIODN entries.
        """
        geom_size = (end - start + 1) & U64_MAX
        if not is_power_of_2(geom_size) or geom_size < PAMU_PAGE_SIZE:
            raise kerr(errno.EINVAL)
        if start & (geom_size - 1):
            raise kerr(errno.EINVAL)
        if end > (1 << 36) - 1:
            raise kerr(errno.EINVAL)
        if self.enabled:
            raise kerr(errno.EBUSY)
        self.aperture_start = start
        self.aperture_end = end
        self.geom_size = geom_size
        if self.win_arr is not None:
            self.unconfigure_windows()

    def unconfigure_windows(self) -> None:
        """Back to "WINDOWS not set": no window array, count reads as the maximum, every
        attached LIODN invalid with its subwindows freed."""
        self.win_arr = None
        self.win_cnt = self.max_subwin_cnt
        self.mapped = 0
        for liodn in self.liodns:
            self.pamu.pamu_free_subwins(liodn)
            self.pamu.pamu_disable_liodn(liodn)

    def fsl_pamu_set_windows(self, w_count: int) -> None:
        """fsl_pamu_set_windows(): EBUSY while enabled, EINVAL before GEOMETRY or for a bad
        count; then every LIODN is reprogrammed (pamu_set_domain_geometry) and the window
        array is replaced."""
        if self.enabled:
            raise kerr(errno.EBUSY)
        if not self.geom_size:
            raise kerr(errno.EINVAL)
        if w_count > self.max_subwin_cnt or not is_power_of_2(w_count):
            raise kerr(errno.EINVAL)
        if w_count > 1 and self.liodns and self.geom_size >> ilog2(w_count) < PAMU_PAGE_SIZE:
            # pamu_set_liodn() → pamu_config_spaace(): "subwindow size out of range" for the
            # first LIODN.  Refused here before any LIODN is touched; the kernel had already
            # disabled it and taken its SPAACE block.
            raise kerr(errno.EINVAL)
        try:
            for liodn in self.liodns:
                self.pamu_set_liodn(liodn, w_count if w_count > 1 else 0)
        except OSError:
            # pamu_config_spaace: subwindow below 4 KiB; pamu_config_ppaace: "spaace indexes
            # exhausted".  The LIODNs are half programmed; leave them all invalid with
            # nothing configured rather than pretend the old windows still hold.
            self.unconfigure_windows()
            raise
        self.win_arr = [DmaWindow() for _ in range(w_count)]
        self.win_cnt = w_count
        # quirk: the kernel does not reset dma_domain->mapped here; the backend enables the
        # domain only after a successful window enable, so it never matters.  We reset it so
        # that attach does not replay an empty array.
        self.mapped = 0

    def configure_domain_stash(self, cpu: int, cache: int, stash_id: int) -> None:
        """configure_domain_stash(): record the attribute, then program every LIODN.

        quirk: the kernel stores the attribute and its stash id before it checks them, so a
        refused request ("Windows not configured") is still applied when WINDOWS is set.
        """
        self.dma_stash = (cpu, cache)
        self.stash_id = stash_id
        if stash_id == NOT_DEFINED:
            raise kerr(errno.EINVAL)
        for liodn in self.liodns:
            self.update_liodn_stash(liodn, stash_id)

    def configure_domain_dma_state(self, enable: bool) -> None:
        """configure_domain_dma_state(): ENODEV to enable without a valid window; sets or
        clears V of every attached LIODN's primary entry."""
        if enable and not self.mapped:
            raise kerr(errno.ENODEV)
        self.enabled = enable
        for liodn in self.liodns:
            if enable:
                self.pamu.pamu_enable_liodn(liodn)
            else:
                self.pamu.pamu_disable_liodn(liodn)

    def fsl_pamu_window_enable(self, wnd_nr: int, paddr: int, size: int, prot: int) -> None:
        """fsl_pamu_window_enable(): ENODEV (no windows), EINVAL (index, size), EBUSY
        (count 1 while enabled, or the window already valid).  ``prot`` is IOMMU_READ/WRITE."""
        pamu_prot = prot_to_ap(prot)  # IOMMU_READ -> query, IOMMU_WRITE -> update
        if self.win_arr is None:
            raise kerr(errno.ENODEV)
        if wnd_nr >= self.win_cnt:
            raise kerr(errno.EINVAL)
        if size > self.subwin_size():
            raise kerr(errno.EINVAL)
        if self.win_cnt == 1:
            if self.enabled:
                raise kerr(errno.EBUSY)
            # check_size(size, aperture_start)
            if not is_power_of_2(size) or size < PAMU_PAGE_SIZE \
                    or self.aperture_start & (size - 1):
                raise kerr(errno.EINVAL)
        wnd = self.win_arr[wnd_nr]
        if wnd.valid:
            raise kerr(errno.EBUSY)
        wnd.paddr, wnd.size, wnd.prot = paddr, size, pamu_prot
        for liodn in self.liodns:
            self.update_liodn(liodn, wnd_nr)
        wnd.valid = True
        self.mapped += 1

    def fsl_pamu_window_disable(self, wnd_nr: int) -> None:
        """fsl_pamu_window_disable(): silent for an unconfigured or invalid window."""
        if self.win_arr is None or wnd_nr >= self.win_cnt:
            return
        if not self.win_arr[wnd_nr].valid:
            return
        for liodn in self.liodns:
            # disable_domain_win(); quirk: with one window only the first LIODN is
            # disabled, the others get their window denied (enabled is already 0 for them).
            if self.win_cnt == 1 and self.enabled:
                self.pamu.pamu_disable_liodn(liodn)
                self.enabled = False
            else:
                self.pamu.pamu_disable_spaace(liodn, wnd_nr)
        self.win_arr[wnd_nr].valid = False
        self.mapped -= 1

    def destroy(self) -> None:
        """fsl_pamu_domain_destroy(): every LIODN detached."""
        for liodn in list(self.liodns):
            self.detach_liodn(liodn)
        self.enabled = False
        self.mapped = 0


# ---------------------------------------------------------------------------------------------
# vfio_iommu_fsl_pamu.c: the VFIO backend


@dataclass(eq=False)
class DmaMapping:
    """``struct vfio_dma``: a MAP_DMA range, a whole number of windows (SPEC §6.1)."""

    iova: int
    size: int
    vaddr: int
    prot: int  # IOMMU_READ | IOMMU_WRITE
    owner: int  # tgid of the process that mapped it


@dataclass(eq=False)
class MsiMapping:
    """``struct vfio_msi_dma``: a bank mapped in a window (explicit: MAP_MSI_BANK; auto: the
    kernel's reserved window)."""

    iova: int
    bank: int
    prot: int


@dataclass(eq=False)
class _Slot:
    """What the backend put in a window: DMA (with its pinned frames) or an MSI bank."""

    dma: DmaMapping | None = None
    msi: MsiMapping | None = None
    paddr: int = 0
    size: int = 0  # bytes charged to the owner's locked_vm (DMA windows)
    pinned: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class WindowInfo:
    """One row of :meth:`PamuBackend.window_table` (for dumps and the demo)."""

    index: int
    iova: int
    size: int  # the window size
    kind: str  # "free" | "dma" | "msi"
    paddr: int | None = None
    mapped_size: int | None = None
    prot: int | None = None  # IOMMU_READ | IOMMU_WRITE
    mapping: DmaMapping | None = None
    bank: int | None = None


class PamuDriver(IommuDriver):
    """The VFIO PAMU IOMMU driver (``vfio_iommu_driver_ops_fsl_pamu``)."""

    name: ClassVar[str] = "vfio-iommu-fsl_pamu"

    @classmethod
    def check_extension(cls, machine: Machine, ext: int) -> int:
        """vfio_iommu_fsl_pamu_ioctl(VFIO_CHECK_EXTENSION): 1 only for VFIO_FSL_PAMU_IOMMU."""
        return 1 if ext == P.VFIO_FSL_PAMU_IOMMU else 0

    @classmethod
    def open(cls, machine: Machine, iommu_type: int) -> PamuBackend:
        """vfio_iommu_fsl_pamu_open(): EINVAL for any other type."""
        if iommu_type != P.VFIO_FSL_PAMU_IOMMU:
            raise kerr(errno.EINVAL)
        return PamuBackend(machine)


class PamuBackend(IommuBackend):
    """``struct vfio_iommu`` of vfio_iommu_fsl_pamu.c: one PAMU domain per container."""

    driver: ClassVar[type[IommuDriver]] = PamuDriver

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        opts = machine.options
        self.auto = opts.msi_mode == "auto"
        self.swallow = bool(opts.sdk_swallow_errors) and not self.auto
        self.pamu: Pamu = machine.pamu
        self.cpus = self.pamu.num_cpus  # [decision D4] the CPUs a stash request may name
        self.msi = machine.msi
        self.domain = FslDmaDomain(self.pamu)
        # The VFIO layer's own view (iommu->aperture_*, iommu->page_size): equal to the
        # domain's except after a geometry the domain refused under sdk_swallow_errors.
        self.aperture_start = self.domain.aperture_start
        self.aperture_end = self.domain.aperture_end
        self.window_size = 0  # iommu->page_size; 0 = windows not configured
        self.nsubwindows = 0
        self.dma_list: list[DmaMapping] = []
        self.msi_dma_list: list[MsiMapping] = []
        self.slots: dict[int, _Slot] = {}  # window index -> what is mapped there
        self.groups: list[Group] = []
        self.group_liodns: dict[int, list[int]] = {}  # id(group) -> its LIODNs

    # =========================================================================================
    # introspection

    @property
    def contiguous(self) -> bool:
        """The ``contiguous_memory`` option, read at each MAP_DMA (SPEC §10.3)."""
        return bool(self.machine.options.contiguous_memory)

    @property
    def enabled(self) -> bool:
        """The domain is enabled (every attached LIODN's primary entry valid)."""
        return self.domain.enabled

    @property
    def windows_configured(self) -> bool:
        return self.window_size != 0 and self.domain.win_arr is not None

    @property
    def bank_count(self) -> int:
        return self.msi.bank_count()

    def window_iova(self, k: int) -> int:
        return self.aperture_start + k * self.window_size

    def iova_to_win(self, iova: int) -> int:
        """iova_to_win() (vfio_iommu_fsl_pamu.c)."""
        return (iova - self.aperture_start) // self.window_size

    def window_table(self) -> list[WindowInfo]:
        """Per window: free, DMA (paddr, prot, mapping) or MSI bank i.  Empty before WINDOWS."""
        if not self.windows_configured:
            return []
        assert self.domain.win_arr is not None
        rows = []
        for k in range(self.nsubwindows):
            slot = self.slots.get(k)
            iova = self.window_iova(k)
            hw = self.domain.win_arr[k] if k < len(self.domain.win_arr) else None
            msize = hw.size if hw is not None and hw.valid else None
            if slot is None:
                rows.append(WindowInfo(k, iova, self.window_size, "free"))
            elif slot.dma is not None:
                rows.append(WindowInfo(k, iova, self.window_size, "dma", slot.paddr, msize,
                                       slot.dma.prot, mapping=slot.dma))
            else:
                assert slot.msi is not None
                rows.append(WindowInfo(k, iova, self.window_size, "msi", slot.paddr, msize,
                                       slot.msi.prot, bank=slot.msi.bank))
        return rows

    def usable_end(self) -> int:
        """End (exclusive) of the IOVA range MAP_DMA may use (SPEC §6.7.1)."""
        if self.auto:
            free = max(self.nsubwindows - self.bank_count, 0)
            return self.aperture_start + free * self.window_size
        return self.aperture_end + 1

    # =========================================================================================
    # IommuBackend ops

    def check_extension(self, ext: int) -> int:
        return PamuDriver.check_extension(self.machine, ext)

    def ioctl(self, proc: Process, request: int, arg: UserArg) -> int:
        """vfio_iommu_fsl_pamu_ioctl(): one handler per ioctl, ENOTTY for anything else."""
        if request == V.VFIO_CHECK_EXTENSION:
            return self.check_extension(arg.value)
        if request == V.VFIO_IOMMU_MAP_DMA:
            return self.ioctl_map_dma(proc, arg)
        if request == V.VFIO_IOMMU_UNMAP_DMA:
            return self.ioctl_unmap_dma(proc, arg)
        if request == V.VFIO_IOMMU_GET_INFO:
            return self.ioctl_get_info(arg)
        if request == P.VFIO_IOMMU_PAMU_GET_ATTR:
            return self.ioctl_get_attr(arg)
        if request == P.VFIO_IOMMU_PAMU_SET_ATTR:
            return self.ioctl_set_attr(arg)
        if request == P.VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT:
            return self.bank_count  # fsl_msi_get_region_count()
        if request == P.VFIO_IOMMU_PAMU_MAP_MSI_BANK:
            return self.ioctl_map_msi_bank(arg)
        if request == P.VFIO_IOMMU_PAMU_UNMAP_MSI_BANK:
            return self.ioctl_unmap_msi_bank(arg)
        raise kerr(errno.ENOTTY)

    def _group_liodns(self, group: Group) -> list[int]:
        liodns: list[int] = []
        for dev in group.devices:
            if dev.rid not in liodns:
                liodns.append(dev.rid)
        return liodns

    def attach_group(self, group: Group) -> None:
        """vfio_iommu_fsl_pamu_attach_group(): EINVAL for a group already attached; then
        fsl_pamu_attach_device() for each LIODN of the group (SPEC §6.2)."""
        if any(g is group for g in self.groups):
            raise kerr(errno.EINVAL)
        done: list[int] = []
        try:
            for liodn in self._group_liodns(group):
                self.domain.attach_liodn(liodn)
                done.append(liodn)
        except OSError:
            for liodn in done:
                self.domain.detach_liodn(liodn)
            raise
        self.groups.append(group)
        self.group_liodns[id(group)] = done

    def detach_group(self, group: Group) -> None:
        """vfio_iommu_fsl_pamu_detach_group(): the group's LIODNs leave the domain."""
        for i, g in enumerate(self.groups):
            if g is group:
                del self.groups[i]
                for liodn in self.group_liodns.pop(id(group), []):
                    self.domain.detach_liodn(liodn)
                return

    def release(self) -> None:
        """vfio_iommu_fsl_pamu_release(): groups detached, every DMA and MSI window
        disabled and unpinned, the domain freed."""
        for group in list(self.groups):
            self.detach_group(group)
        for k in sorted(self.slots):
            slot = self.slots[k]
            self.domain.fsl_pamu_window_disable(k)
            if slot.dma is not None:
                self._unpin_slot(slot)
        self.slots.clear()
        self.dma_list.clear()
        self.msi_dma_list.clear()
        self.domain.destroy()

    def msi_address(self, group: Group, doorbell_phys: int) -> int:
        """The IOVA a device of ``group`` writes to reach the MSI register at
        ``doorbell_phys``: the window mapping that bank, lowest index first, plus the
        register's offset in its page.  ENODEV when no window maps it (SPEC §9.1 step 2-3;
        the SDK's fsl_iommu_get_iova() scanned the windows the same way)."""
        page = doorbell_phys & ~0xFFF
        for k in sorted(self.slots):
            slot = self.slots[k]
            if slot.msi is not None and slot.paddr == page:
                return self.window_iova(k) + (doorbell_phys & 0xFFF)
        raise kerr(errno.ENODEV)

    # =========================================================================================
    # GET_ATTR / SET_ATTR (SPEC §6.3)

    def ioctl_get_attr(self, arg: UserArg) -> int:
        """VFIO_IOMMU_PAMU_GET_ATTR: vfio_handle_get_attr(); the struct is copied back."""
        minsz = V.offsetofend(P.vfio_pamu_attr, "attr_info")
        attr = read_struct(arg, P.vfio_pamu_attr, minsz)
        if attr.argsz < minsz:
            raise kerr(errno.EINVAL)
        self._sanitize_attr("VFIO_IOMMU_PAMU_GET_ATTR", attr)
        if attr.flags:
            raise kerr(errno.EINVAL)
        info = attr.attr_info
        d = self.domain
        if attr.attribute == P.VFIO_ATTR_GEOMETRY:
            info.attr.aperture_start = d.aperture_start
            info.attr.aperture_end = d.aperture_end
        elif attr.attribute == P.VFIO_ATTR_WINDOWS:
            info.windows = d.win_cnt
        elif attr.attribute == P.VFIO_ATTR_PAMU_STASH:
            info.stash.cpu, info.stash.cache = d.dma_stash
        else:
            raise kerr(errno.EINVAL)
        write_struct(arg, attr, minsz)
        return 0

    def ioctl_set_attr(self, arg: UserArg) -> int:
        """VFIO_IOMMU_PAMU_SET_ATTR: vfio_handle_set_attr().

        quirk: with ``sdk_swallow_errors`` every error after the argsz check returns 0, as
        the SDK ignored vfio_handle_set_attr()'s result (SPEC §6.7.2).
        """
        minsz = V.offsetofend(P.vfio_pamu_attr, "attr_info")
        attr = read_struct(arg, P.vfio_pamu_attr, minsz)
        if attr.argsz < minsz:
            raise kerr(errno.EINVAL)
        self._sanitize_attr("VFIO_IOMMU_PAMU_SET_ATTR", attr)
        try:
            self.handle_set_attr(attr)
        except OSError:
            if self.swallow:
                return 0
            raise
        return 0

    def _sanitize_attr(self, ioctl: str, attr: P.vfio_pamu_attr) -> None:
        """Sanitizer (SPEC §13.8): argsz 32, ``__pad`` zero."""
        san.check_argsz(self.machine, ioctl, "vfio_pamu_attr", attr.argsz,
                        (V.sizeof(P.vfio_pamu_attr),))
        san.check_padding(self.machine, ioctl, attr, ("__pad",))

    def handle_set_attr(self, attr: P.vfio_pamu_attr) -> None:
        if attr.flags:
            raise kerr(errno.EINVAL)
        info = attr.attr_info
        if attr.attribute == P.VFIO_ATTR_GEOMETRY:
            start, end = info.attr.aperture_start, info.attr.aperture_end
            if self.swallow:
                # quirk: the SDK recorded the aperture before the domain judged it.
                self.aperture_start, self.aperture_end = start, end
            self._set_geometry(start, end)
        elif attr.attribute == P.VFIO_ATTR_WINDOWS:
            self._set_windows(info.windows)
        elif attr.attribute == P.VFIO_ATTR_PAMU_STASH:
            self._set_stash(info.stash.cpu, info.stash.cache)
        else:
            raise kerr(errno.EINVAL)

    def _set_geometry(self, start: int, end: int) -> None:
        had_windows = self.domain.win_arr is not None
        self.domain.configure_domain_geometry(start, end)
        self.aperture_start, self.aperture_end = start, end
        if had_windows:
            # [proposed, Appendix A #15] windows unconfigured; explicit bank mappings go.
            self._drop_windows()
            self.window_size = 0
            self.nsubwindows = 0

    def _set_windows(self, count: int) -> None:
        """DOMAIN_ATTR_WINDOWS (fsl_pamu_set_windows); on success every window mapping is
        discarded (SPEC §6.3)."""
        d = self.domain
        had = d.win_arr is not None
        try:
            d.fsl_pamu_set_windows(count)
        except OSError:
            if had and d.win_arr is None:
                self._drop_windows()
                self.window_size = 0
                self.nsubwindows = 0
            raise
        self._drop_windows()
        self.nsubwindows = count
        self.window_size = (self.aperture_end - self.aperture_start + 1) // count

    def _drop_windows(self) -> None:
        """Forget every window record (the domain's array was replaced or removed)."""
        for slot in self.slots.values():
            if slot.dma is not None:
                self._unpin_slot(slot)
        self.slots.clear()
        self.dma_list.clear()
        self.msi_dma_list.clear()

    def _set_stash(self, cpu: int, cache: int) -> None:
        """DOMAIN_ATTR_FSL_PAMU_STASH: configure_domain_stash() with get_stash_id()'s id.

        get_stash_id() answers ~0 for a cache other than L1–L3 and for an L1/L2 request on
        a CPU it does not know, and applies erratum A-007907 (t4240: L1 → L2) itself, as the
        SDK's does; [decision D4] ``cpu`` must be a CPU of the machine for L3 too.  Then the
        domain: EINVAL when a LIODN is attached and WINDOWS is not set.
        """
        stash_id = self.pamu.get_stash_id(cache, cpu)
        if not 0 <= cpu < self.cpus:
            stash_id = NOT_DEFINED
        self.domain.configure_domain_stash(cpu, cache, stash_id)

    # =========================================================================================
    # MAP_DMA / UNMAP_DMA (SPEC §6.5, §6.6)

    def ioctl_map_dma(self, proc: Process, arg: UserArg) -> int:
        """VFIO_IOMMU_MAP_DMA: checks in the order of decision D5's list (SPEC §6.5)."""
        minsz = V.offsetofend(V.vfio_iommu_type1_dma_map, "size")
        m = read_struct(arg, V.vfio_iommu_type1_dma_map, minsz)
        mask = V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE
        if m.argsz < minsz or m.flags & ~mask:
            raise kerr(errno.EINVAL)
        san.check_argsz(self.machine, "VFIO_IOMMU_MAP_DMA", "vfio_iommu_type1_dma_map",
                        m.argsz, (V.sizeof(V.vfio_iommu_type1_dma_map),))
        prot = 0
        if m.flags & V.VFIO_DMA_MAP_FLAG_WRITE:
            prot |= IOMMU_WRITE
        if m.flags & V.VFIO_DMA_MAP_FLAG_READ:
            prot |= IOMMU_READ
        if not prot:
            raise kerr(errno.EINVAL)  # No READ/WRITE?
        return self.dma_do_map(proc, m.iova, m.vaddr, m.size, prot)

    def dma_do_map(self, proc: Process, iova: int, vaddr: int, size: int, prot: int) -> int:
        """vfio_dma_do_map() + __vfio_dma_map() with SPEC §6.5's rules 4–11."""
        if not self.windows_configured:
            raise kerr(errno.EINVAL)
        ws = self.window_size
        if size == 0 or iova % ws or size % ws:
            san.report_misaligned(self.machine, "VFIO_IOMMU_MAP_DMA", ws, "the window size",
                                  {"iova": iova, "size": size})
            raise kerr(errno.EINVAL)
        if iova + size - 1 > U64_MAX or vaddr + size - 1 > U64_MAX:
            raise kerr(errno.EINVAL)
        if iova < self.aperture_start or iova + size > self.usable_end():
            raise kerr(errno.EINVAL)
        first = self.iova_to_win(iova)
        wins = range(first, first + size // ws)
        if any(self.slots.get(k) is not None and self.slots[k].dma is not None for k in wins):
            raise kerr(errno.EBUSY)  # the SDK's errno for an overlap (Type1: EEXIST)
        if any(self.slots.get(k) is not None for k in wins):
            raise kerr(errno.EBUSY)  # explicit: a bank's window [SDK window_enable]
        write = bool(prot & IOMMU_WRITE)
        # 9: every window's backing must be one physically contiguous range (SPEC §10.3).
        page_sizes = []
        for i in range(len(wins)):
            v = vaddr + i * ws
            proc.mm.check(v, ws, write)  # EFAULT: not mapped, or not writable for WRITE
            if self.contiguous:
                page_sizes.append(PAMU_PAGE_SIZE)  # the pool decides; no smaps lookup
                continue
            psize = proc.mm.page_size(v)
            page_sizes.append(psize)
            start = v & ~(psize - 1)
            if v + ws > start + psize:
                raise kerr(errno.EFAULT)
        # 10: the contiguous backing must start aligned to the window ([proposed] EINVAL).
        pinned: list[list[tuple[int, int]]] = []
        bus = self.machine.bus
        try:
            for i in range(len(wins)):
                v = vaddr + i * ws
                try:
                    ranges = bus.pin(proc.mm, v, ws, page_sizes[i], self.contiguous)
                except MemoryError:
                    raise kerr(errno.ENOMEM) from None  # simulated DRAM or pool exhausted
                pinned.append(ranges)
                if len(ranges) != 1:
                    raise kerr(errno.EFAULT)
                if ranges[0][0] % ws:
                    san.report_misaligned(
                        self.machine, "VFIO_IOMMU_MAP_DMA", ws,
                        "the window size (a window maps naturally aligned physical memory)",
                        {"phys": ranges[0][0]}, vaddr=v)
                    raise kerr(errno.EINVAL)
            # 11: RLIMIT_MEMLOCK (no CAP_IPC_LOCK).
            limit = proc.memlock_limit()
            if limit is not None and self.locked_vm(proc.pid) + size > limit:
                raise kerr(errno.ENOMEM)
        except OSError:
            for ranges in pinned:
                bus.unpin(ranges)
            raise
        first_mapping = not self.dma_list
        mapping = DmaMapping(iova, size, vaddr, prot, proc.pid)
        enabled_wins: list[int] = []
        try:
            for i, k in enumerate(wins):
                phys = pinned[i][0][0]
                self.domain.fsl_pamu_window_enable(k, phys, ws, prot)
                enabled_wins.append(k)
                self.slots[k] = _Slot(dma=mapping, paddr=phys, size=ws, pinned=pinned[i])
            if self.auto and first_mapping:
                self._map_banks()
        except OSError:
            # All or nothing [decision D5]: only the windows this call enabled go.
            for k in enabled_wins:
                self.domain.fsl_pamu_window_disable(k)
                self.slots.pop(k, None)
            for ranges in pinned:
                bus.unpin(ranges)
            raise
        self.dma_list.append(mapping)
        self._account(proc.pid, size)
        # The SDK enabled the domain after every successful map; this also revalidates a
        # LIODN that an access violation disabled (SPEC §7.4).
        self.domain.configure_domain_dma_state(True)
        return 0

    def _map_banks(self) -> None:
        """Auto mode (SPEC §6.7.1): bank i in window count − 1 − i, one 4 KiB page (the
        page of fsl_msi_get_region(i)'s address), write only, through
        fsl_pamu_window_enable() as vfio_msi_map() does; all or nothing."""
        done: list[int] = []
        try:
            for i in range(self.bank_count):
                k = self.nsubwindows - 1 - i
                region = self.msi.get_region(i)
                assert region is not None
                page = region[0] & ~0xFFF
                self.domain.fsl_pamu_window_enable(k, page, 0x1000, IOMMU_WRITE)
                done.append(k)
                self.slots[k] = _Slot(msi=MsiMapping(self.window_iova(k), i, IOMMU_WRITE),
                                      paddr=page)
        except OSError:
            for k in done:
                self.domain.fsl_pamu_window_disable(k)
                self.slots.pop(k, None)
            raise

    def _unmap_banks(self) -> None:
        """Auto mode: disable every bank window (vfio_msi_unmap() for each)."""
        for k in sorted(self.slots):
            if self.slots[k].msi is not None:
                self.domain.fsl_pamu_window_disable(k)
                del self.slots[k]

    def locked_vm(self, pid: int) -> int:
        """mm->locked_vm of ``pid`` in bytes (machine-wide, shared with other containers)."""
        return self.machine.locked_vm.get(pid, 0)

    def _account(self, pid: int, delta: int) -> None:
        """vfio_lock_acct(): charge or release pinned bytes to the mapping's owner."""
        locked = self.machine.locked_vm
        locked[pid] = locked.get(pid, 0) + delta
        if locked[pid] <= 0:
            del locked[pid]

    def _unpin_slot(self, slot: _Slot) -> None:
        if slot.pinned:
            self.machine.bus.unpin(slot.pinned)
            slot.pinned = []
        if slot.dma is not None and slot.size:
            self._account(slot.dma.owner, -slot.size)
            slot.size = 0

    def ioctl_unmap_dma(self, proc: Process, arg: UserArg) -> int:
        """VFIO_IOMMU_UNMAP_DMA (SPEC §6.6); the bytes unmapped are written to ``size``."""
        minsz = V.offsetofend(V.vfio_iommu_type1_dma_unmap, "size")
        u = read_struct(arg, V.vfio_iommu_type1_dma_unmap, minsz)
        if u.argsz < minsz or u.flags:
            raise kerr(errno.EINVAL)
        san.check_argsz(self.machine, "VFIO_IOMMU_UNMAP_DMA", "vfio_iommu_type1_dma_unmap",
                        u.argsz, (V.sizeof(V.vfio_iommu_type1_dma_unmap),))
        if not self.windows_configured:
            raise kerr(errno.EINVAL)  # [proposed, Appendix A #12]
        ws = self.window_size
        if u.size == 0 or u.iova + u.size - 1 > U64_MAX or u.iova % ws or u.size % ws:
            if u.size and u.iova + u.size - 1 <= U64_MAX:
                san.report_misaligned(self.machine, "VFIO_IOMMU_UNMAP_DMA", ws,
                                      "the window size", {"iova": u.iova, "size": u.size})
            raise kerr(errno.EINVAL)
        unmapped = self.dma_do_unmap(proc, u.iova, u.size)
        u.size = unmapped
        arg.write(V.offsetof(V.vfio_iommu_type1_dma_unmap, "size"),
                  unmapped.to_bytes(8, "little"))
        return 0

    def dma_do_unmap(self, proc: Process, iova: int, size: int) -> int:
        """vfio_dma_do_unmap() (SDK): disable every DMA window inside ``[iova, iova + size)``;
        trim or split the mappings they belonged to (vfio_remove_dma_overlap()); when none
        is left, disable the domain (vfio_disable_iommu_domain(); in auto mode the banks go
        first).  Returns the bytes unmapped (SPEC §6.6)."""
        ws = self.window_size
        lo = max(iova, self.aperture_start)
        hi = min(iova + size, self.aperture_end + 1)
        removed = 0
        touched: list[DmaMapping] = []
        if lo < hi:
            for k in range(self.iova_to_win(lo), self.iova_to_win(hi - 1) + 1):
                slot = self.slots.get(k)
                if slot is None or slot.dma is None:
                    continue
                # SPEC §2.7 #6 / Appendix A #31: before 6.0 the walk stops at a mapping
                # created by another process.
                if self.machine.profile.before("6.0") and slot.dma.owner != proc.pid:
                    break
                self.domain.fsl_pamu_window_disable(k)
                self._unpin_slot(slot)
                del self.slots[k]
                if slot.dma not in touched:
                    touched.append(slot.dma)
                removed += ws
        for m in touched:
            self._rebuild_mapping(m)
        if removed and not self.dma_list:
            self._last_mapping_gone()
        return removed

    def _rebuild_mapping(self, m: DmaMapping) -> None:
        """Trim or split ``m`` into the runs of windows it still holds (the low / high /
        split cases of vfio_remove_dma_overlap(), at window granularity)."""
        self.dma_list.remove(m)
        first = self.iova_to_win(m.iova)
        held = [k for k in range(first, first + m.size // self.window_size)
                if (s := self.slots.get(k)) is not None and s.dma is m]
        runs: list[list[int]] = []
        for k in held:
            if runs and runs[-1][-1] == k - 1:
                runs[-1].append(k)
            else:
                runs.append([k])
        for run in runs:
            start = self.window_iova(run[0])
            part = DmaMapping(start, len(run) * self.window_size,
                              m.vaddr + (start - m.iova), m.prot, m.owner)
            for k in run:
                self.slots[k].dma = part
            self.dma_list.append(part)

    def msi_enabled_devices(self) -> list[str]:
        """Devices of the attached groups whose MSI or MSI-X is enabled."""
        return [d.name for g in self.groups for d in g.devices
                if d.hw is not None and d.hw.msi_kind is not None]

    def _last_mapping_gone(self) -> None:
        """The last DMA mapping went (SPEC §6.6, §6.7.1)."""
        if self.auto:
            self._unmap_banks()
            devices = self.msi_enabled_devices()
            if devices:
                self.machine.report(
                    san.MSI_UNMAPPED,
                    f"PAMU container: last DMA mapping removed while MSI is enabled "
                    f"({', '.join(devices)}); the MSI bank windows are unmapped and the domain "
                    "disabled, so those interrupts will fault (SPEC §6.7.1)",
                    devices=devices)
        self.domain.configure_domain_dma_state(False)

    # =========================================================================================
    # MAP_MSI_BANK / UNMAP_MSI_BANK (explicit mode, SPEC §6.7.2)

    def ioctl_map_msi_bank(self, arg: UserArg) -> int:
        """VFIO_IOMMU_PAMU_MAP_MSI_BANK: vfio_do_msi_map(); ENOTTY in auto mode.

        quirk: with ``sdk_swallow_errors`` every error after the argsz check returns 0, as
        the SDK ignored vfio_do_msi_map()'s result.
        """
        if self.auto:
            raise kerr(errno.ENOTTY)
        minsz = V.offsetofend(P.vfio_pamu_msi_bank_map, "iova")
        m = read_struct(arg, P.vfio_pamu_msi_bank_map, minsz)
        if m.argsz < minsz:
            raise kerr(errno.EINVAL)
        ioctl = "VFIO_IOMMU_PAMU_MAP_MSI_BANK"
        san.check_argsz(self.machine, ioctl, "vfio_pamu_msi_bank_map", m.argsz,
                        (V.sizeof(P.vfio_pamu_msi_bank_map),))
        san.check_padding(self.machine, ioctl, m, ("__pad",))
        try:
            self.do_msi_map(m.flags, m.msi_bank_index, m.iova)
        except OSError:
            if self.swallow:
                return 0
            raise
        return 0

    def do_msi_map(self, flags: int, bank: int, iova: int) -> None:
        """vfio_do_msi_map() + vfio_msi_map() (SPEC §6.7.2), in the SDK's order of checks:
        READ/WRITE, then the bank (fsl_msi_get_region(): -ENODEV), then the window of
        ``iova`` (iommu_domain_window_enable()).  [decision D3] ``iova`` must be the start of
        a free window of the aperture; [proposed, Appendix A #11] EINVAL before WINDOWS."""
        mask = V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE
        prot = 0
        if flags & V.VFIO_DMA_MAP_FLAG_WRITE:
            prot |= IOMMU_WRITE
        if flags & V.VFIO_DMA_MAP_FLAG_READ:
            prot |= IOMMU_READ
        if flags & ~mask or not prot:
            raise kerr(errno.EINVAL)
        region = self.msi.get_region(bank)
        if region is None:
            raise kerr(errno.ENODEV)  # fsl_msi_get_region(): "MSI region not found"
        addr, _size = region
        if not self.windows_configured:
            raise kerr(errno.EINVAL)  # [proposed, Appendix A #11]
        if not self.aperture_start <= iova <= self.aperture_end \
                or (iova - self.aperture_start) % self.window_size:
            if self.aperture_start <= iova <= self.aperture_end:
                # The aperture start is aligned to the aperture size, so to the window size.
                san.report_misaligned(self.machine, "VFIO_IOMMU_PAMU_MAP_MSI_BANK",
                                      self.window_size, "the window size", {"iova": iova})
            raise kerr(errno.EINVAL)
        k = self.iova_to_win(iova)
        if k in self.slots:
            raise kerr(errno.EBUSY)
        page = addr & ~0xFFF
        self.domain.fsl_pamu_window_enable(k, page, 0x1000, prot)
        rec = MsiMapping(iova, bank, prot)
        self.slots[k] = _Slot(msi=rec, paddr=page)
        self.msi_dma_list.append(rec)

    def ioctl_unmap_msi_bank(self, arg: UserArg) -> int:
        """VFIO_IOMMU_PAMU_UNMAP_MSI_BANK: vfio_do_msi_unmap(); ENOTTY in auto mode."""
        if self.auto:
            raise kerr(errno.ENOTTY)
        minsz = V.offsetofend(P.vfio_pamu_msi_bank_unmap, "iova")
        u = read_struct(arg, P.vfio_pamu_msi_bank_unmap, minsz)
        if u.argsz < minsz:
            raise kerr(errno.EINVAL)
        san.check_argsz(self.machine, "VFIO_IOMMU_PAMU_UNMAP_MSI_BANK",
                        "vfio_pamu_msi_bank_unmap", u.argsz,
                        (V.sizeof(P.vfio_pamu_msi_bank_unmap),))
        try:
            if u.flags:
                raise kerr(errno.EINVAL)
            for rec in self.msi_dma_list:
                if rec.iova == u.iova:
                    k = self.iova_to_win(rec.iova)
                    self.domain.fsl_pamu_window_disable(k)
                    self.slots.pop(k, None)
                    self.msi_dma_list.remove(rec)
                    return 0
            raise kerr(errno.EINVAL)
        except OSError:
            if self.swallow:
                return 0
            raise

    # =========================================================================================
    # GET_INFO (auto mode, SPEC §6.8)

    def usable_ranges(self) -> list[tuple[int, int]]:
        """The IOVA_RANGE list, inclusive ends."""
        if not self.windows_configured:
            return [(self.aperture_start, self.aperture_end)]
        end = self.usable_end()
        if end <= self.aperture_start:
            return []  # [proposed, Appendix A #13] nr_iovas = 0
        return [(self.aperture_start, end - 1)]

    def ioctl_get_info(self, arg: UserArg) -> int:
        """VFIO_IOMMU_GET_INFO: ENOTTY in explicit mode (as the SDK).  Auto mode [decision
        D3]: ``flags = PGSIZES | CAPS``, the window size as the page size, one IOVA_RANGE
        with the usable DMA range; argsz, chain and write-back rules as
        vfio_iommu_type1_get_info() (SPEC §6.8, §5.4 steps 1 and 4-9)."""
        if not self.auto:
            raise kerr(errno.ENOTTY)
        minsz = V.offsetofend(V.vfio_iommu_type1_info, "iova_pgsizes")
        info = read_struct(arg, V.vfio_iommu_type1_info, minsz)
        if info.argsz < minsz:
            raise kerr(errno.EINVAL)
        argsz = info.argsz
        capsz = V.offsetofend(V.vfio_iommu_type1_info, "cap_offset")
        info_size = V.sizeof(V.vfio_iommu_type1_info)
        san.check_argsz(self.machine, "VFIO_IOMMU_GET_INFO", "vfio_iommu_type1_info", argsz,
                        (minsz, capsz, info_size), room=True)
        profile = self.machine.profile
        ranges = self.usable_ranges()
        body = bytearray(V.sizeof(V.vfio_iommu_type1_info_cap_iova_range)
                         - V.sizeof(V.vfio_info_cap_header))
        body[0:4] = len(ranges).to_bytes(4, "little")  # nr_iovas; reserved stays 0
        for start, end in ranges:
            body += bytes(V.vfio_iova_range(start, end))
        chain = caps.build_chain(
            [(V.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, bytes(body))],
            caps.chain_aligned(profile))
        out = V.vfio_iommu_type1_info()  # zeroed (6.6: "memset(&info, 0, ...)")
        out.flags = V.VFIO_IOMMU_INFO_PGSIZES
        out.iova_pgsizes = self.window_size if self.windows_configured else 0
        place = caps.place_caps(chain, argsz, info_size)
        if place.has_caps:
            out.flags |= V.VFIO_IOMMU_INFO_CAPS
        out.argsz = place.argsz
        out.cap_offset = place.cap_offset
        if place.data:
            arg.write(place.cap_offset, place.data)
        n = caps.fixed_part_size(profile, argsz, minsz, capsz, info_size)
        write_struct(arg, out, n)
        return 0

    def iter_dma(self) -> Iterator[DmaMapping]:
        yield from sorted(self.dma_list, key=lambda m: m.iova)

    def dump(self) -> dict[str, object]:
        """The container's PAMU state for ``Kernel.dump()`` (SPEC §12.1)."""
        d = self.domain
        return {
            "msi_mode": "auto" if self.auto else "explicit",
            "aperture": [self.aperture_start, self.aperture_end],
            "windows": d.win_cnt if d.win_arr is not None else None,
            "window_size": self.window_size,
            "enabled": d.enabled,
            "stash": {"cpu": d.dma_stash[0], "cache": d.dma_stash[1]},
            "liodns": list(d.liodns),
            "mappings": [{"iova": m.iova, "size": m.size, "vaddr": m.vaddr, "prot": m.prot,
                          "owner": m.owner} for m in self.iter_dma()],
            "window_table": [
                {"index": w.index, "iova": w.iova, "kind": w.kind, "paddr": w.paddr,
                 "mapped_size": w.mapped_size, "prot": w.prot, "bank": w.bank}
                for w in self.window_table() if w.kind != "free"],
        }
