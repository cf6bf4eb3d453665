"""The Type1 IOMMU backend: VFIO_TYPE1_IOMMU (v1) and VFIO_TYPE1v2_IOMMU (v2).

Models drivers/vfio/vfio_iommu_type1.c as Linux 6.18 has it, with the older behaviours the
kernel profile selects (SPEC §2.7 rows 6, 8-12, 18-21).  SPEC §4.3 (CHECK_EXTENSION,
SET_IOMMU), §5 (MAP_DMA, UNMAP_DMA, GET_INFO, valid IOVA ranges, DIRTY_PAGES), §10.2, §10.4.

Constraints of the model, before the code:

* ``pgsize`` is the smallest page size of the container's ``iova_pgsizes`` (4 KiB on x86;
  sizes below PAGE_SIZE are reported as PAGE_SIZE): every ``iova``, ``vaddr`` and ``size`` is
  a multiple of it.
* A mapping (``struct vfio_dma``) is ``{iova, size, vaddr, prot, owner}``; mappings never
  overlap and are never merged.  They live in a sorted dict keyed by IOVA: finding, inserting
  and removing one is O(log n), so MAP_DMA costs the same at 1,000 and at 65,535 mappings.
  Profiles before 5.12 also keep them in the kernel's red-black tree (kernel/rbtree.py),
  because there the UNMAP_DMA walk follows the tree's shape (see dma_do_unmap()).
* At most ``dma_entry_limit`` mappings (65535, the module parameter's default ``U16_MAX``).
* User memory is real: MAP_DMA checks that ``[vaddr, vaddr + size)`` is mapped in the caller
  (writable when the device may write), pins it to simulated frames (``machine.bus.pin``) and
  programs the container's page table (``machine.iommu``, hw/iommu.py).  Pinned bytes count
  against RLIMIT_MEMLOCK per process (``machine.locked_vm``, mm->locked_vm) unless the caller
  has CAP_IPC_LOCK.
* Dirty tracking: devices cannot report the pages they dirtied, so while tracking is on every
  page of every mapping is dirty (the kernel's ``num_non_pinned_groups`` case, SPEC §5.7).
* The VADDR flags (VFIO_UPDATE_VADDR) are not modelled: refused where the kernel would act on
  them [decision D16].
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from sortedcontainers import SortedDict

from vfiosim.hw.iommu import IOMMU_READ, IOMMU_WRITE
from vfiosim.kernel import sanitizer as san
from vfiosim.kernel.caps import VfioInfoCap, chain_aligned, fixed_part_size, place_caps
from vfiosim.kernel.iommu import IommuBackend, IommuDriver
from vfiosim.kernel.rbtree import RbNode, RbTree
from vfiosim.kernel.uaccess import PAGE_SHIFT, PAGE_SIZE, kerr, read_struct, write_struct
from vfiosim.uapi.vfio import (
    VFIO_CHECK_EXTENSION,
    VFIO_DMA_CC_IOMMU,
    VFIO_DMA_MAP_FLAG_READ,
    VFIO_DMA_MAP_FLAG_VADDR,
    VFIO_DMA_MAP_FLAG_WRITE,
    VFIO_DMA_UNMAP_FLAG_ALL,
    VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
    VFIO_DMA_UNMAP_FLAG_VADDR,
    VFIO_IOMMU_DIRTY_PAGES,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_START,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP,
    VFIO_IOMMU_GET_INFO,
    VFIO_IOMMU_INFO_CAPS,
    VFIO_IOMMU_INFO_PGSIZES,
    VFIO_IOMMU_MAP_DMA,
    VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
    VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
    VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
    VFIO_IOMMU_UNMAP_DMA,
    VFIO_TYPE1_IOMMU,
    VFIO_TYPE1_NESTING_IOMMU,
    VFIO_UNMAP_ALL,
    VFIO_UPDATE_VADDR,
    VFIO_TYPE1v2_IOMMU,
    offsetofend,
    sizeof,
    vfio_bitmap,
    vfio_iommu_type1_dirty_bitmap,
    vfio_iommu_type1_dirty_bitmap_get,
    vfio_iommu_type1_dma_map,
    vfio_iommu_type1_dma_unmap,
    vfio_iommu_type1_info,
    vfio_iommu_type1_info_cap_iova_range,
    vfio_iommu_type1_info_cap_migration,
    vfio_iommu_type1_info_dma_avail,
    vfio_iova_range,
)

if TYPE_CHECKING:
    from vfiosim.hw.iommu import Domain
    from vfiosim.kernel.group import Group
    from vfiosim.kernel.uaccess import Process, UserArg
    from vfiosim.machine import Machine

U64_MAX = (1 << 64) - 1

#: DIRTY_BITMAP_PAGES_MAX = INT_MAX pages; DIRTY_BITMAP_SIZE_MAX = its bitmap in bytes.
DIRTY_BITMAP_PAGES_MAX = (1 << 31) - 1
DIRTY_BITMAP_SIZE_MAX = ((DIRTY_BITMAP_PAGES_MAX + 63) // 64) * 8  # 0x1000_0000

#: x86_64 TASK_SIZE_MAX with 4-level paging: the end of the user address space (access_ok()).
TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE
#: The highest address access_ok() lets a range end at from 6.4 to 6.11, where
#: valid_user_address(x) was ``(long)x >= 0``: the whole lower half.
LONG_MAX = (1 << 63) - 1


def DIRTY_BITMAP_BYTES(n: int) -> int:
    """Bytes of a bitmap of ``n`` bits in whole 64-bit words."""
    return ((n + 63) // 64) * 8


def _ffs(x: int) -> int:
    """__ffs(): index of the lowest set bit (arch/x86/include/asm/bitops.h).

    Undefined for 0 in C; x86 computes it with ``rep; bsf`` (TZCNT on every x86_64 the
    profiles run on), which gives 64."""
    return (x & -x).bit_length() - 1 if x else 64


def _shr(x: int, n: int) -> int:
    """``x >> n`` on a u64 as x86 SHR computes it: the count is taken mod 64, so a shift by
    ``__ffs(0)`` leaves ``x`` as it is."""
    return x >> (n & 63)


def access_ok(addr: int, size: int, user_ptr_max: int = TASK_SIZE_MAX) -> bool:
    """access_ok() on x86_64 (__access_ok(), arch/x86/include/asm/uaccess_64.h): ``addr +
    size`` does not carry and is at most ``user_ptr_max`` -- TASK_SIZE_MAX, except from 6.4
    to 6.11 (approximate), where it was LONG_MAX (:attr:`Type1Backend.user_ptr_max`)."""
    return addr + size <= user_ptr_max


def update_pgsize_bitmap(domain_pgsizes: int) -> int:
    """vfio_update_pgsize_bitmap(): the domain's page sizes, with any size below PAGE_SIZE
    hidden and PAGE_SIZE reported instead (pinning works in whole pages)."""
    page_mask = ~(PAGE_SIZE - 1)
    if domain_pgsizes & ~page_mask:
        return (domain_pgsizes & page_mask) | PAGE_SIZE
    return domain_pgsizes


def verify_bitmap_size(npages: int, bitmap_size: int) -> None:
    """verify_bitmap_size(): EINVAL unless the bitmap is non-empty, at most
    DIRTY_BITMAP_SIZE_MAX and large enough for ``npages`` bits."""
    if (not npages or not bitmap_size or bitmap_size > DIRTY_BITMAP_SIZE_MAX
            or bitmap_size < DIRTY_BITMAP_BYTES(npages)):
        raise kerr(errno.EINVAL)


@dataclass(slots=True)
class VfioDma:
    """``struct vfio_dma``: one user mapping."""

    iova: int
    size: int
    vaddr: int
    prot: int  # IOMMU_READ | IOMMU_WRITE
    owner: int  # tgid of the process that mapped it (dma->task)
    lock_cap: bool  # capable(CAP_IPC_LOCK) at map time (model: no RLIMIT_MEMLOCK applied)
    phys: list[tuple[int, int]]  # the pinned frames, merged into physically contiguous runs
    node: RbNode[VfioDma] | None = None  # its place in the rb-tree (profiles before 5.12)

    @property
    def end(self) -> int:
        return self.iova + self.size


def _check_extension(machine: Machine, iommu: Type1Backend | None, ext: int) -> int:
    """vfio_iommu_type1_check_extension(); ``iommu`` is None without a container."""
    profile = machine.profile
    if ext in (VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU):
        return 1
    if ext == VFIO_TYPE1_NESTING_IOMMU:
        # §2.7 #10: nesting was dropped from Type1 in 6.13.
        return 1 if profile.before("6.13") else 0
    if ext == VFIO_UNMAP_ALL:
        # §2.7 #8: VFIO_UNMAP_ALL came with 5.12.
        return 0 if profile.before("5.12") else 1
    if ext == VFIO_UPDATE_VADDR:
        # §2.7 #9: the kernel answers 1 (after SET_IOMMU from 6.3); not modelled [D16].
        return 0
    if ext == VFIO_DMA_CC_IOMMU:
        if iommu is None:
            return 0
        # vfio_domains_have_enforce_cache_coherency(): every x86 domain enforces it [D15].
        return 1
    return 0


class Type1Driver(IommuDriver):
    """The registered driver ``vfio_iommu_driver_ops_type1``."""

    name: ClassVar[str] = "vfio-iommu-type1"

    @classmethod
    def check_extension(cls, machine: Machine, ext: int) -> int:
        """CHECK_EXTENSION before SET_IOMMU (``ops->ioctl(NULL, ...)``)."""
        return _check_extension(machine, None, ext)

    @classmethod
    def open(cls, machine: Machine, iommu_type: int) -> Type1Backend:
        """vfio_iommu_type1_open(): v1, v2, or v2 with nesting (profiles before 6.13)."""
        if iommu_type == VFIO_TYPE1_IOMMU:
            return Type1Backend(machine, v2=False)
        if iommu_type == VFIO_TYPE1v2_IOMMU:
            return Type1Backend(machine, v2=True)
        if iommu_type == VFIO_TYPE1_NESTING_IOMMU and machine.profile.before("6.13"):
            return Type1Backend(machine, v2=True, nesting=True)
        raise kerr(errno.EINVAL)


class Type1Backend(IommuBackend):
    """``struct vfio_iommu``: the Type1 state of one container."""

    driver: ClassVar[type[IommuDriver]] = Type1Driver

    def __init__(self, machine: Machine, v2: bool, nesting: bool = False) -> None:
        self.machine = machine
        self.v2 = v2
        self.nesting = nesting
        # The [iommu] machine table, defaults filled in by machine.py (SPEC §2.4).
        cfg = machine.iommu_config
        self.pgsize_bitmap: int = update_pgsize_bitmap(cfg["pgsizes"])
        self.aperture_end: int = cfg["aperture_end"]  # the domain's geometry.aperture_end
        #: the dma_entry_limit module parameter, read at open (vfio_iommu_type1_open())
        self.dma_entry_limit: int = cfg["dma_entry_limit"]
        #: each group's reserved regions (iommu_get_group_resv_regions()), inclusive (start,
        #: last): on x86 the MSI window (IOMMU_RESV_MSI).  The machine format has no
        #: IOMMU_RESV_DIRECT_RELAXABLE region, the one type the kernel leaves valid.
        self.reserved: list[tuple[int, int]] = [(r["start"], r["last"]) for r in cfg["reserved"]]
        # The profile is fixed for the machine's life: the §2.7 rows this backend forks on.
        profile = machine.profile
        self._before_5_12 = profile.before("5.12")  # §2.7 #8
        self._before_6_0 = profile.before("6.0")  # §2.7 #6
        self._before_6_18 = profile.before("6.18")  # §2.7 #18-21
        #: access_ok()'s bound: the sign-bit test of valid_user_address() from 6.4 (the LAM
        #: rework) until USER_PTR_MAX (= TASK_SIZE_MAX) in 6.12 [kernel; not in SPEC §2.7]
        self.user_ptr_max = LONG_MAX if not profile.before("6.4") and profile.before("6.12") \
            else TASK_SIZE_MAX
        self.groups: list[Group] = []
        #: vfio_iommu.dma_list: iova -> VfioDma
        self.dma_list: SortedDict = SortedDict()
        #: vfio_iommu.dma_list as the kernel's rb-tree, kept only where its shape shows:
        #: the UNMAP_DMA walk before 5.12 (see dma_do_unmap())
        self.rb: RbTree[VfioDma] | None = RbTree() if self._before_5_12 else None
        #: vfio_iommu.iova_list: valid ranges, inclusive (start, last), ascending
        self.iova_list: list[tuple[int, int]] = []
        self.dirty_page_tracking = False
        self.domain: Domain = machine.iommu.new_domain()
        if not hasattr(machine, "locked_vm"):
            machine.locked_vm = {}  # pid -> bytes pinned (mm->locked_vm)
        self._handlers = {
            VFIO_IOMMU_GET_INFO: self.get_info,
            VFIO_IOMMU_MAP_DMA: self.map_dma,
            VFIO_IOMMU_UNMAP_DMA: self.unmap_dma,
            VFIO_IOMMU_DIRTY_PAGES: self.dirty_pages,
        }

    # ------------------------------------------------------------------------------------
    # small helpers

    @property
    def pgsize(self) -> int:
        """``1 << __ffs(iommu->pgsize_bitmap)``: the smallest IOMMU page size."""
        return 1 << _ffs(self.pgsize_bitmap)

    @property
    def dma_avail(self) -> int:
        """vfio_iommu.dma_avail: mappings still allowed."""
        return self.dma_entry_limit - len(self.dma_list)

    def mappings(self) -> list[VfioDma]:
        """Every mapping, in IOVA order (introspection)."""
        return list(self.dma_list.values())

    def _first_index(self, iova: int) -> int:
        """Index in dma_list of the first mapping that ends after ``iova``."""
        dl = self.dma_list
        i = dl.bisect_right(iova) - 1
        if i < 0 or dl.peekitem(i)[1].end <= iova:
            i += 1
        return i

    def find_dma(self, start: int, size: int) -> VfioDma | None:
        """vfio_find_dma(): a mapping overlapping ``[start, start + size)``; with ``size`` 0, a
        mapping that contains ``start`` and does not start there."""
        dl = self.dma_list
        if size == 0:
            i = dl.bisect_left(start) - 1
            if i >= 0:
                dma: VfioDma = dl.peekitem(i)[1]
                if dma.end > start:
                    return dma
            return None
        i = self._first_index(start)
        if i < len(dl):
            dma = dl.peekitem(i)[1]
            if dma.iova < start + size:
                return dma
        return None

    def link_dma(self, dma: VfioDma) -> None:
        """vfio_link_dma() into the rb-tree: descend by ``new->iova + new->size <=
        dma->iova`` (vfio_dma_do_map() links the new mapping zero-sized, so by its iova),
        then rb_insert_color()."""
        assert self.rb is not None
        parent: RbNode[VfioDma] | None = None
        left = False
        n = self.rb.root
        while n is not None:
            parent = n
            left = dma.iova <= n.item.iova
            n = n.left if left else n.right
        dma.node = self.rb.link(dma, parent, left)

    def unlink_dma(self, dma: VfioDma) -> None:
        """vfio_unlink_dma(): rb_erase() (nothing without the rb-tree)."""
        if self.rb is not None and dma.node is not None:
            self.rb.erase(dma.node)
            dma.node = None

    def rb_find_dma(self, start: int, size: int) -> VfioDma | None:
        """vfio_find_dma() on the rb-tree: the first mapping overlapping ``[start, start +
        size)`` that the descent from the root meets, in the kernel's u64 arithmetic (a
        range ending at 2^64 ends at 0 and meets nothing)."""
        assert self.rb is not None
        end = (start + size) & U64_MAX
        n = self.rb.root
        while n is not None:
            dma = n.item
            if end <= dma.iova:
                n = n.left
            elif start >= dma.end & U64_MAX:
                n = n.right
            else:
                return dma
        return None

    def iova_dma_valid(self, start: int, last: int) -> bool:
        """vfio_iommu_iova_dma_valid(): ``[start, last]`` inside one valid range (an empty
        list allows everything)."""
        if not self.iova_list:
            return True
        return any(lo <= start and last <= hi for lo, hi in self.iova_list)

    def _iova_list_of_a_group(self) -> list[tuple[int, int]]:
        """The valid ranges with a group attached (SPEC §5.5): the aperture, as
        vfio_iommu_aper_resize() sets it, minus the group's reserved regions, as
        vfio_iommu_resv_exclude() cuts them.  Every group of the machine has the same
        regions, so a second group leaves the list as it is."""
        ranges = [(0, self.aperture_end)]
        for lo, last in self.reserved:
            out: list[tuple[int, int]] = []
            for a, b in ranges:
                if last < a or lo > b:
                    out.append((a, b))
                    continue
                if a < lo:
                    out.append((a, lo - 1))
                if last < b:
                    out.append((last + 1, b))
            ranges = out
        return ranges

    # ------------------------------------------------------------------------------------
    # ops table

    def check_extension(self, ext: int) -> int:
        """CHECK_EXTENSION with the container's state."""
        return _check_extension(self.machine, self, ext)

    def ioctl(self, proc: Process, request: int, arg: UserArg) -> int:
        """vfio_iommu_type1_ioctl(): dispatch; anything else is ENOTTY."""
        if request == VFIO_CHECK_EXTENSION:
            return self.check_extension(arg.value)
        handler = self._handlers.get(request)
        if handler is None:
            raise kerr(errno.ENOTTY)
        return handler(proc, arg)

    def attach_group(self, group: Group) -> None:
        """vfio_iommu_type1_attach_group(): program every device's context entry to the
        container's domain and shrink the valid IOVA list by the group's reserved regions."""
        if group in self.groups:  # "Check for duplicates"
            raise kerr(errno.EINVAL)
        if self.nesting:
            # iommu_enable_nesting() fails: the x86 drivers have no nesting (Appendix A #8).
            raise kerr(errno.EINVAL)
        # vfio_iommu_aper_conflict(): with a valid list, a mapping outside the new aperture.
        if self.iova_list and self.dma_list \
                and self.dma_list.peekitem(-1)[1].end - 1 > self.aperture_end:
            raise kerr(errno.EINVAL)
        # vfio_iommu_resv_conflict(): a mapping over a reserved region (SPEC §5.3).
        for lo, last in self.reserved:
            if self.find_dma(lo, last - lo + 1) is not None:
                raise kerr(errno.EINVAL)
        iova_copy = self._iova_list_of_a_group()
        if not iova_copy:  # vfio_iommu_resv_exclude(): nothing valid is left
            raise kerr(errno.EINVAL)
        for dev in group.devices:
            self.machine.iommu.attach(dev.rid, self.domain)
        self.groups.append(group)
        self.iova_list = iova_copy  # vfio_iommu_iova_insert_copy()

    def detach_group(self, group: Group) -> None:
        """vfio_iommu_type1_detach_group(): clear the context entries; when the last group
        goes, every mapping is unmapped and unpinned (vfio_iommu_unmap_unpin_all())."""
        if group not in self.groups:
            return
        for dev in group.devices:
            if self.machine.iommu.domain_of(dev.rid) is self.domain:
                self.machine.iommu.detach(dev.rid)
        self.groups.remove(group)
        if not self.groups:
            self.unmap_unpin_all()
            # The container releases the backend next (SPEC §4.6): no list to keep.
            self.iova_list = []

    def release(self) -> None:
        """vfio_iommu_type1_release(): every mapping goes, tracking ends."""
        for group in list(self.groups):
            self.detach_group(group)
        self.unmap_unpin_all()
        self.dirty_page_tracking = False

    def msi_address(self, group: Group, doorbell_phys: int) -> int:
        """x86: MSI writes are interrupt requests and are not translated (SPEC §9.2)."""
        return doorbell_phys

    # ------------------------------------------------------------------------------------
    # pinning and the page table

    def pin_map_dma(self, proc: Process, dma: VfioDma, limit: int | None) -> None:
        """vfio_pin_map_dma(): pin the user range page by page from its start and map it.

        vfio_pin_pages_remote() calls vaddr_get_pfn() for a page *before* it checks the
        page against RLIMIT_MEMLOCK, so the first page that is missing (EFAULT) or over the
        limit (ENOMEM) decides (SPEC §5.1 rules 10, 11).  Nothing stays pinned on failure."""
        write = bool(dma.prot & IOMMU_WRITE)
        npages = dma.size >> PAGE_SHIFT
        locked_vm: dict[int, int] = self.machine.locked_vm
        if limit is not None:
            locked = locked_vm.get(proc.pid, 0) >> PAGE_SHIFT
            # Page i (from 0) fails when locked_vm + i + 1 > limit.
            first_over = max((limit >> PAGE_SHIFT) - locked, 0)
            if first_over < npages:
                proc.mm.check(dma.vaddr, (first_over + 1) * PAGE_SIZE, write)
                raise kerr(errno.ENOMEM)
        proc.mm.check(dma.vaddr, dma.size, write)
        try:
            frames = self.machine.bus.pin(proc.mm, dma.vaddr, dma.size)
        except MemoryError:
            raise kerr(errno.ENOMEM) from None  # no frame left for get_user_pages()
        # iommu_map() in runs of physically contiguous frames (vfio_iommu_map()); the runs
        # are what the mapping keeps and unpins (a 1 GiB buffer is one run, not 2^18 pages).
        runs: list[tuple[int, int]] = []
        for phys, length in frames:
            if runs and phys == runs[-1][0] + runs[-1][1]:
                runs[-1] = (runs[-1][0], runs[-1][1] + length)
            else:
                runs.append((phys, length))
        dma.phys = runs
        iova = dma.iova
        for phys, length in runs:
            self.domain.map(iova, phys, length, dma.prot)
            iova += length
        locked_vm[proc.pid] = locked_vm.get(proc.pid, 0) + dma.size

    def remove_dma(self, dma: VfioDma) -> None:
        """vfio_remove_dma(): unmap from the page table, unpin, unaccount, unlink."""
        self.domain.unmap(dma.iova, dma.size)
        if dma.phys:
            self.machine.bus.unpin(dma.phys)
        locked_vm: dict[int, int] = self.machine.locked_vm
        left = locked_vm.get(dma.owner, 0) - dma.size
        if left > 0:
            locked_vm[dma.owner] = left
        else:
            locked_vm.pop(dma.owner, None)
        self.unlink_dma(dma)
        del self.dma_list[dma.iova]

    def unmap_unpin_all(self) -> None:
        """vfio_iommu_unmap_unpin_all()."""
        for dma in list(self.dma_list.values()):
            self.remove_dma(dma)

    # ------------------------------------------------------------------------------------
    # VFIO_IOMMU_MAP_DMA

    def map_dma(self, proc: Process, arg: UserArg) -> int:
        """vfio_iommu_type1_map_dma(): argsz and flags, then vfio_dma_do_map() (SPEC §5.1)."""
        minsz = offsetofend(vfio_iommu_type1_dma_map, "size")
        mask = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE
        if not self._before_5_12:  # §2.7 #8
            mask |= VFIO_DMA_MAP_FLAG_VADDR
        map_ = read_struct(arg, vfio_iommu_type1_dma_map, minsz)
        if map_.argsz < minsz or map_.flags & ~mask:
            raise kerr(errno.EINVAL)
        san.check_argsz(self.machine, "VFIO_IOMMU_MAP_DMA", "vfio_iommu_type1_dma_map",
                        map_.argsz, (sizeof(vfio_iommu_type1_dma_map),))
        self.dma_do_map(proc, map_)
        return 0

    def dma_do_map(self, proc: Process, map_: vfio_iommu_type1_dma_map) -> None:
        """vfio_dma_do_map(): the checks in the kernel's order, then pin and map."""
        set_vaddr = bool(map_.flags & VFIO_DMA_MAP_FLAG_VADDR)
        iova, vaddr, size = map_.iova, map_.vaddr, map_.size
        pgsize = self.pgsize
        # READ/WRITE from device perspective
        prot = 0
        if map_.flags & VFIO_DMA_MAP_FLAG_WRITE:
            prot |= IOMMU_WRITE
        if map_.flags & VFIO_DMA_MAP_FLAG_READ:
            prot |= IOMMU_READ
        # (A 32-bit kernel answers EOVERFLOW here when a field does not fit; LP64 never.)
        if self._before_6_18:
            # §2.7 #18: every check before the overlap answers EINVAL, wrap included.
            if (not prot and not set_vaddr) or (prot and set_vaddr):
                raise kerr(errno.EINVAL)
            if not size or (size | iova | vaddr) & (pgsize - 1):
                self._misaligned("VFIO_IOMMU_MAP_DMA", iova=iova, vaddr=vaddr, size=size)
                raise kerr(errno.EINVAL)
            # Don't allow IOVA or virtual address wrap
            if iova + size - 1 > U64_MAX or vaddr + size - 1 > U64_MAX:
                raise kerr(errno.EINVAL)
        else:
            if not size:
                raise kerr(errno.EINVAL)
            # check_add_overflow(iova, size - 1) || check_add_overflow(vaddr, size - 1)
            if iova + size - 1 > U64_MAX or vaddr + size - 1 > U64_MAX:
                raise kerr(errno.EOVERFLOW)
            if (not prot and not set_vaddr) or (prot and set_vaddr):
                raise kerr(errno.EINVAL)
            if (size | iova | vaddr) & (pgsize - 1):
                self._misaligned("VFIO_IOMMU_MAP_DMA", iova=iova, vaddr=vaddr, size=size)
                raise kerr(errno.EINVAL)
        iova_end = iova + size - 1
        existing = self.find_dma(iova, size)
        if set_vaddr:
            # VFIO_UPDATE_VADDR is not modelled: refused where the kernel would act on the
            # looked-up mapping [decision D16; SPEC §5.1 rule 6].
            raise kerr(errno.EINVAL)
        if existing is not None:
            raise kerr(errno.EEXIST)
        if not self.dma_avail:
            raise kerr(errno.ENOSPC)
        if not self.iova_dma_valid(iova, iova_end):
            raise kerr(errno.EINVAL)
        limit = proc.memlock_limit()  # None: CAP_IPC_LOCK or RLIM_INFINITY
        dma = VfioDma(iova, size, vaddr, prot, proc.pid, limit is None, [])
        if self.rb is not None:
            self.link_dma(dma)  # linked zero-sized before pinning, erased if pinning fails
        try:
            self.pin_map_dma(proc, dma, limit)
        except OSError:
            self.unlink_dma(dma)
            raise
        self.dma_list[iova] = dma

    def _misaligned(self, ioctl: str, **fields: int) -> None:
        """Sanitizer (SPEC §13.8): say which field an alignment EINVAL is about."""
        san.report_misaligned(self.machine, ioctl, self.pgsize, "the IOMMU page size", fields)

    # ------------------------------------------------------------------------------------
    # VFIO_IOMMU_UNMAP_DMA

    def unmap_dma(self, proc: Process, arg: UserArg) -> int:
        """vfio_iommu_type1_unmap_dma(): argsz, flags and the dirty bitmap header, then
        vfio_dma_do_unmap(); ``size`` is written back only on success (SPEC §5.2)."""
        minsz = offsetofend(vfio_iommu_type1_dma_unmap, "size")
        mask = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
        if not self._before_5_12:  # §2.7 #8
            mask |= VFIO_DMA_UNMAP_FLAG_ALL | VFIO_DMA_UNMAP_FLAG_VADDR
        unmap = read_struct(arg, vfio_iommu_type1_dma_unmap, minsz)
        if unmap.argsz < minsz or unmap.flags & ~mask:
            raise kerr(errno.EINVAL)
        if (unmap.flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
                and unmap.flags & (VFIO_DMA_UNMAP_FLAG_ALL | VFIO_DMA_UNMAP_FLAG_VADDR)):
            raise kerr(errno.EINVAL)
        bitmap: vfio_bitmap | None = None
        with_bitmap = bool(unmap.flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP)
        if not with_bitmap or unmap.argsz >= minsz + sizeof(vfio_bitmap):
            san.check_argsz(self.machine, "VFIO_IOMMU_UNMAP_DMA", "vfio_iommu_type1_dma_unmap",
                            unmap.argsz,
                            (minsz + sizeof(vfio_bitmap),) if with_bitmap else (minsz,))
        if with_bitmap:
            if unmap.argsz < minsz + sizeof(vfio_bitmap):
                raise kerr(errno.EINVAL)
            bitmap = read_struct(arg, vfio_bitmap, sizeof(vfio_bitmap), offset=minsz)
            if not access_ok(bitmap.data, bitmap.size, self.user_ptr_max):
                raise kerr(errno.EINVAL)
            pgshift = _ffs(bitmap.pgsize)
            verify_bitmap_size(_shr(unmap.size, pgshift), bitmap.size)
        unmap.size = self.dma_do_unmap(proc, unmap, bitmap)
        write_struct(arg, unmap, minsz)
        return 0

    def dma_do_unmap(self, proc: Process, unmap: vfio_iommu_type1_dma_unmap,
                     bitmap: vfio_bitmap | None) -> int:
        """vfio_dma_do_unmap(): returns the bytes unmapped.

        v1 - User mappings were once coalesced, so v1 keeps the old results: an unmap that
        starts inside a mapping succeeds with size 0, and an unmap covering a mapping's first
        IOVA removes the whole mapping, even past the end of the range.
        v2 - Unmaps must cover whole mappings: a range that bisects one fails with EINVAL;
        size 0 comes back only when nothing was mapped in the range.
        """
        iova = unmap.iova
        size = unmap.size
        unmap_all = bool(unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL)
        invalidate_vaddr = bool(unmap.flags & VFIO_DMA_UNMAP_FLAG_VADDR)
        old = self._before_6_18
        pgsize = self.pgsize
        if iova & (pgsize - 1):
            self._misaligned("VFIO_IOMMU_UNMAP_DMA", iova=iova)
            raise kerr(errno.EINVAL)
        if unmap_all:
            if iova or size:
                raise kerr(errno.EINVAL)
            # size = U64_MAX (SIZE_MAX in 6.18): every mapping.
            last = U64_MAX - 1 if old else U64_MAX
        elif old:
            # §2.7 #19: the wrap is one of the size rules, EINVAL.
            if not size or size & (pgsize - 1) or iova + size - 1 > U64_MAX:
                self._misaligned("VFIO_IOMMU_UNMAP_DMA", size=size)
                raise kerr(errno.EINVAL)
            # §2.7 #20: `iova + size` of a range ending at 2^64 is 0 in u64 arithmetic, and
            # vfio_find_dma_first_node() / the walk find nothing below 0.
            last = iova + size - 1 if iova + size <= U64_MAX else -1
        else:
            if not size or size & (pgsize - 1):
                self._misaligned("VFIO_IOMMU_UNMAP_DMA", size=size)
                raise kerr(errno.EINVAL)
            if iova + size - 1 > U64_MAX:  # check_add_overflow(iova, size - 1)
                raise kerr(errno.EOVERFLOW)
            last = iova + size - 1
        # When dirty tracking is enabled, allow only min supported pgsize
        if bitmap is not None and (not self.dirty_page_tracking or bitmap.pgsize != pgsize):
            raise kerr(errno.EINVAL)
        if self.v2 and not unmap_all:
            dma = self.find_dma(iova, 1)
            if dma is not None and dma.iova != iova:
                raise kerr(errno.EINVAL)
            dma = self.find_dma(iova + size - 1, 0)
            if dma is not None and dma.end & U64_MAX != (iova + size) & U64_MAX:
                raise kerr(errno.EINVAL)
        if invalidate_vaddr:
            # VFIO_UPDATE_VADDR is not modelled [decision D16; SPEC §5.2 rule 12].
            raise kerr(errno.EINVAL)
        owner_rule = self._before_6_0  # §2.7 #6
        unmapped = 0
        if self.rb is not None:
            # Before 5.12 the walk is `while ((dma = vfio_find_dma(iommu, iova, size)))`:
            # each turn takes whichever overlapping mapping the descent from the rb-tree's
            # root meets first, so which mappings go before a stop (v1 start inside a
            # mapping, owner rule, bitmap EFAULT), and the order of the bitmap writes,
            # follow the tree's shape.  5.12 walks in IOVA order from
            # vfio_find_dma_first_node() (below).
            while (dma := self.rb_find_dma(iova, size)) is not None:
                if not self.v2 and iova > dma.iova:
                    break
                if owner_rule and dma.owner != proc.pid:
                    break
                if bitmap is not None:
                    self.update_user_bitmap(proc, bitmap.data, dma, iova, pgsize)
                unmapped += dma.size
                self.remove_dma(dma)
            return unmapped
        dl = self.dma_list
        i = self._first_index(iova)
        while i < len(dl):
            dma = dl.peekitem(i)[1]
            if dma.iova > last:
                break
            if not self.v2 and iova > dma.iova:
                break
            # Task with same address space who mapped this iova range is allowed to unmap
            # it (kernels before 6.0).
            if owner_rule and dma.owner != proc.pid:
                break
            if bitmap is not None:
                self.update_user_bitmap(proc, bitmap.data, dma, iova, pgsize)
            unmapped += dma.size
            self.remove_dma(dma)  # the next mapping moves to index i
        return unmapped

    # ------------------------------------------------------------------------------------
    # dirty bitmaps

    def update_user_bitmap(self, proc: Process, bitmap: int, dma: VfioDma, base_iova: int,
                           pgsize: int) -> None:
        """update_user_bitmap(): every page of ``dma`` is dirty.  Whole 64-bit words are
        written from the word of its first bit to the word of its last; the bits before its
        first bit in the first word keep their value (read back first), the bits after its
        last bit in the last word are written 0 (SPEC §5.7)."""
        pgshift = _ffs(pgsize)
        nbits = dma.size >> pgshift
        bit_offset = (dma.iova - base_iova) >> pgshift
        copy_offset = bit_offset // 64
        shift = bit_offset % 64
        addr = bitmap + copy_offset * 8
        bits = ((1 << nbits) - 1) << shift
        if shift:
            leftover = int.from_bytes(proc.mm.read(addr, 8), "little")
            bits |= leftover & ((1 << shift) - 1)
        proc.mm.write(addr, bits.to_bytes(DIRTY_BITMAP_BYTES(nbits + shift), "little"))

    def iova_dirty_bitmap(self, proc: Process, bitmap: int, iova: int, size: int,
                          pgsize: int) -> None:
        """vfio_iova_dirty_bitmap(): the range must not bisect a mapping; then the bits of
        every mapping that starts inside it."""
        dma = self.find_dma(iova, 1)
        if dma is not None and dma.iova != iova:
            raise kerr(errno.EINVAL)
        dma = self.find_dma(iova + size - 1, 0)
        if dma is not None and dma.end != iova + size:
            raise kerr(errno.EINVAL)
        last = iova + size - 1
        dl = self.dma_list
        for key in dl.irange(iova, last):
            self.update_user_bitmap(proc, bitmap, dl[key], iova, pgsize)

    def dirty_pages(self, proc: Process, arg: UserArg) -> int:
        """vfio_iommu_type1_dirty_pages(): START, STOP, GET_BITMAP (SPEC §5.7)."""
        if not self.v2:
            raise kerr(errno.EACCES)
        mask = (VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP
                | VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP)
        minsz = offsetofend(vfio_iommu_type1_dirty_bitmap, "flags")
        dirty = read_struct(arg, vfio_iommu_type1_dirty_bitmap, minsz)
        if dirty.argsz < minsz or dirty.flags & ~mask:
            raise kerr(errno.EINVAL)
        # only one flag should be set at a time
        if not dirty.flags or dirty.flags & (dirty.flags - 1):
            raise kerr(errno.EINVAL)
        # Sanitizer: the header alone, or the header and its range for GET_BITMAP (a range
        # too short is the EINVAL below).
        with_range = minsz + sizeof(vfio_iommu_type1_dirty_bitmap_get)
        get_bitmap = bool(dirty.flags & VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP)
        if not get_bitmap or dirty.argsz >= with_range:
            san.check_argsz(self.machine, "VFIO_IOMMU_DIRTY_PAGES",
                            "vfio_iommu_type1_dirty_bitmap", dirty.argsz,
                            (with_range,) if get_bitmap else (minsz,))
        if dirty.flags & VFIO_IOMMU_DIRTY_PAGES_FLAG_START:
            self.dirty_page_tracking = True
            return 0
        if dirty.flags & VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP:
            self.dirty_page_tracking = False
            return 0
        # VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP
        data_size = dirty.argsz - minsz
        if not data_size or data_size < sizeof(vfio_iommu_type1_dirty_bitmap_get):
            raise kerr(errno.EINVAL)
        rng = read_struct(arg, vfio_iommu_type1_dirty_bitmap_get,
                          sizeof(vfio_iommu_type1_dirty_bitmap_get), offset=minsz)
        iova, size = rng.iova, rng.size
        if self._before_6_18:
            # §2.7 #21: `range.iova + range.size < range.iova`; a range ending exactly at
            # 2^64 wraps to 0 and fails too.  Size 0 fails below (verify_bitmap_size).
            if (iova + size) & U64_MAX < iova:
                raise kerr(errno.EINVAL)
        else:
            if not size:
                raise kerr(errno.EINVAL)
            if iova + size - 1 > U64_MAX:
                raise kerr(errno.EOVERFLOW)
        if not access_ok(rng.bitmap.data, rng.bitmap.size, self.user_ptr_max):
            raise kerr(errno.EINVAL)
        pgshift = _ffs(rng.bitmap.pgsize)
        verify_bitmap_size(_shr(size, pgshift), rng.bitmap.size)
        iommu_pgsize = self.pgsize
        # allow only smallest supported pgsize
        if rng.bitmap.pgsize != iommu_pgsize:
            raise kerr(errno.EINVAL)
        if iova & (iommu_pgsize - 1):
            self._misaligned("VFIO_IOMMU_DIRTY_PAGES", iova=iova)
            raise kerr(errno.EINVAL)
        if not size or size & (iommu_pgsize - 1):
            self._misaligned("VFIO_IOMMU_DIRTY_PAGES", size=size)
            raise kerr(errno.EINVAL)
        if not self.dirty_page_tracking:
            raise kerr(errno.EINVAL)
        self.iova_dirty_bitmap(proc, rng.bitmap.data, iova, size, rng.bitmap.pgsize)
        return 0

    # ------------------------------------------------------------------------------------
    # VFIO_IOMMU_GET_INFO

    def build_caps(self) -> VfioInfoCap:
        """vfio_iommu_migration_build_caps(), vfio_iommu_dma_avail_build_caps(),
        vfio_iommu_iova_build_caps(), in that order (SPEC §5.4 rule 3)."""
        caps = VfioInfoCap(aligned=chain_aligned(self.machine.profile))
        mig = vfio_iommu_type1_info_cap_migration()
        mig.header.id = VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION
        mig.header.version = 1
        mig.flags = 0
        # support minimum pgsize
        mig.pgsize_bitmap = self.pgsize
        mig.max_dirty_bitmap_size = DIRTY_BITMAP_SIZE_MAX
        caps.add_struct(mig)
        avail = vfio_iommu_type1_info_dma_avail()
        avail.header.id = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL
        avail.header.version = 1
        avail.avail = self.dma_avail
        caps.add_struct(avail)
        if self.iova_list:
            cap = vfio_iommu_type1_info_cap_iova_range()
            cap.header.id = VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
            cap.header.version = 1
            cap.nr_iovas = len(self.iova_list)
            ranges = b"".join(bytes(vfio_iova_range(lo, hi)) for lo, hi in self.iova_list)
            caps.add_struct(bytes(cap) + ranges)
        return caps

    def get_info(self, proc: Process, arg: UserArg) -> int:
        """vfio_iommu_type1_get_info() (SPEC §5.4)."""
        minsz = offsetofend(vfio_iommu_type1_info, "iova_pgsizes")
        # For backward compatibility, cannot require this (the end of cap_offset)
        capsz = offsetofend(vfio_iommu_type1_info, "cap_offset")
        info = read_struct(arg, vfio_iommu_type1_info, minsz)
        if info.argsz < minsz:
            raise kerr(errno.EINVAL)
        full = sizeof(vfio_iommu_type1_info)
        # Headers before cap_offset had 16 bytes; capsz and full are the later sizes.
        san.check_argsz(self.machine, "VFIO_IOMMU_GET_INFO", "vfio_iommu_type1_info",
                        info.argsz, (minsz, capsz, full), room=True)
        nwrite = fixed_part_size(self.machine.profile, info.argsz, minsz, capsz, full)
        out = vfio_iommu_type1_info()
        out.argsz = info.argsz
        out.flags = VFIO_IOMMU_INFO_PGSIZES
        out.iova_pgsizes = self.pgsize_bitmap
        placed = place_caps(self.build_caps(), info.argsz, full)
        if placed.has_caps:
            out.flags |= VFIO_IOMMU_INFO_CAPS
            out.argsz = placed.argsz
            if placed.data:
                arg.write(placed.cap_offset, placed.data)
                out.cap_offset = placed.cap_offset
        write_struct(arg, out, nwrite)
        return 0
