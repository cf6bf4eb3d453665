"""Freescale PAMU: the PAACT/SPAACT tables, their entry encodings, and translation.

Models drivers/iommu/fsl_pamu.c and fsl_pamu.h as merged in Linux v3.11–v5.12 (the windowed
API, before the v5.13 cleanup removed subwindows).  SPEC §7.

Hardware constraints (SPEC §1.1, §7.2)
--------------------------------------
* Each LIODN (the 12-bit bus-master identity) has one primary PAACE in the PAACT
  (``PAACE_NUMBER_ENTRIES`` = 0x500 entries, indexed by LIODN).
* The primary entry describes one aperture: a naturally aligned power of two of at least
  4 KiB, ``[WBA, WBA + 2^(WSE+1))``.
* With ``MW`` (multiple windows) set, the aperture is split into ``2^(WCE+1)`` equal
  subwindows (a power of two, at most ``max_subwindows`` = 1 << (1 + PC3.MWCE), 256 on the
  presets).  Subwindow 0 lives in the primary entry; subwindows 1..n-1 are the SPAACEs
  ``fspi .. fspi + n - 2`` of the shared SPAACT (``SPAACE_NUMBER_ENTRIES`` = 0x800).
* Each (sub)window maps one physically contiguous power-of-two region of at least 4 KiB
  (``SWSE``) at ``TWBA`` = ``rpn << 12``.  There are no page tables.
* At boot every LIODN named in the device tree holds the identity window: 2^36 bytes at 0,
  no translation, all permissions (``setup_liodns``).
* An access violation raises the AV interrupt; the kernel's handler disables the LIODN.

API for the domain layer (kernel/iommu/pamu.py)
-----------------------------------------------
``machine.iommu`` is a :class:`Pamu`.  Its methods carry fsl_pamu.c's names, arguments and
return codes (0 or a negative errno ``int``, never an exception)::

    pamu.pamu_config_ppaace(liodn, win_addr, win_size, omi, rpn, snoopid, stashid,
                            subwin_cnt, prot) -> int
    pamu.pamu_config_spaace(liodn, subwin_cnt, subwin, subwin_size, omi, rpn, snoopid,
                            stashid, enable, prot) -> int
    pamu.pamu_enable_liodn(liodn) -> int           # 0, -ENOENT, -EINVAL (WSE not set)
    pamu.pamu_disable_liodn(liodn) -> int          # 0, -ENOENT
    pamu.pamu_disable_spaace(liodn, subwin) -> int # subwin 0: primary AP = denied
    pamu.pamu_update_paace_stash(liodn, subwin, value) -> int
    pamu.pamu_free_subwins(liodn) -> None          # frees the SPAACE block, clears MW
    pamu.pamu_get_fspi_and_allocate(subwin_cnt) -> int   # ULONG_MAX when exhausted
    pamu.pamu_get_ppaace(liodn) -> Paace | None
    pamu.pamu_get_spaace(paace, wnum) -> Paace | None
    pamu.pamu_get_max_subwin_cnt() -> int
    pamu.get_stash_id(stash_dest_hint, vcpu) -> int      # ~0 (0xFFFFFFFF) when unknown
    pamu.pamu_init_ppaace_identity(liodn) -> int   # the boot identity window (setup_liodns)
    pamu.translate(liodn, iova, size, write) -> list[(phys, length)]  # or raises IommuFault
    pamu.dump(liodn) / pamu.paace_fields(liodn) -> dict
    map_addrspace_size_to_wse(size), map_subwindow_cnt_to_wce(count)   # module functions

"Not defined" values are the kernel's ``~(u32)0``: pass ``PAMU_NOT_DEFINED`` for ``omi``,
``snoopid`` and ``stashid`` when there is none.  The windowed domain calls these as
fsl_pamu_domain.c does: ``pamu_set_liodn`` → ``pamu_disable_liodn``, ``pamu_config_ppaace(
..., rpn 0, ..., w_count > 1 ? w_count : 0, prot 0)``, then for every subwindow
``pamu_disable_spaace(liodn, i)`` and ``pamu_config_spaace(..., enable 0, prot 0)``;
a window enable is ``pamu_config_spaace(..., enable = wnd_nr > 0, prot)`` (or
``pamu_config_ppaace`` with ``subwin_cnt`` 0 for a single window).

Stash ids (``get_stash_id``) follow the numbering u-boot writes into the device tree's
``cache-stash-id`` properties (``ft_fixup_cache``, ``ft_fixup_l2cache``,
``ft_fixup_l3cache`` in arch/powerpc/cpu/mpc85xx/fdt.c), which the kernel reads:

* e500mc (p4080): CPU ``c`` (cpu node ``reg`` = c): L1 = 32 + 2c, L2 (backside, one per
  core) = 33 + 2c.
* e6500 (t4240): hardware threads ``t``; core ``c`` = t // 2 has ``reg`` = <2c 2c+1>, so
  L1 = 32 + 4c for both threads; the L2 is shared by a cluster of 4 cores (8 threads):
  cluster ``k`` = t // 8 has L2 = 33 + 2k.
* L3 (the CPC): 1, whatever the CPU (the kernel's L3 path never looks at ``vcpu``).

Erratum A-007907 (t4240): with ``l1_stash_as_l2`` an L1 request returns the L2 id, as the
SDK's patched ``get_stash_id`` does.  Applying it twice changes nothing.

Faults: ``translate`` raises ``hw.iommu.IommuFault(reason)`` whose ``.violation`` is an
:class:`AccessViolation`; the PAMU keeps ``violations`` (every one, erratum A-003638 not
modelled), ``av_status`` per LIODN and the AVS1/AVA latch.  The device model (hw/pci)
records the ``FaultRecord`` (``machine.record_fault``, kept in ``machine.faults``).

Kept kernel quirks: ``pamu_config_spaace`` with ``subwin`` ≥ ``subwin_cnt`` programs the
primary entry; ``pamu_get_spaace`` accepts ``wnum`` up to the window count (one past the
block); ``pamu_config_ppaace`` with ``subwin_cnt`` = 1 fails (gen_pool_alloc of 0 entries);
a bad ``omi`` returns -EINVAL after the earlier fields are written.  Not modelled: page
translation (ATM = 2: such a window faults), the OMT, DD = to-I/O.
"""

from __future__ import annotations

import errno
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from vfiosim.hw.iommu import IommuFault

if TYPE_CHECKING:
    from vfiosim.machine import Machine

# --------------------------------------------------------------------------------------------
# Sizes (fsl_pamu.h)
# --------------------------------------------------------------------------------------------

PAACE_NUMBER_ENTRIES = 0x500
SPAACE_NUMBER_ENTRIES = 0x800
OME_NUMBER_ENTRIES = 16
PAACE_SIZE = 64  # sizeof(struct paace)
PAACT_SIZE = PAACE_SIZE * PAACE_NUMBER_ENTRIES
SPAACT_SIZE = PAACE_SIZE * SPAACE_NUMBER_ENTRIES

PAMU_PAGE_SHIFT = 12
PAMU_PAGE_SIZE = 4096

#: The kernel's ``~(u32)0``: "not defined" for omi, snoopid, stashid; get_stash_id failure.
PAMU_NOT_DEFINED = 0xFFFFFFFF
#: ``ULONG_MAX``: pamu_get_fspi_and_allocate failure, and the rejected rpn of config_spaace.
ULONG_MAX = (1 << 64) - 1

#: Identity window set up at boot by setup_liodns(): WSE 35 = 2^36 bytes.
PAMU_IDENTITY_WSE = 35

# asm/fsl_pamu_stash.h: enum pamu_stash_target
PAMU_ATTR_CACHE_L1 = 1
PAMU_ATTR_CACHE_L2 = 2
PAMU_ATTR_CACHE_L3 = 3

# --------------------------------------------------------------------------------------------
# Field values (fsl_pamu.h)
# --------------------------------------------------------------------------------------------

PAACE_AP_PERMS_DENIED = 0x0
PAACE_AP_PERMS_QUERY = 0x1
PAACE_AP_PERMS_UPDATE = 0x2
PAACE_AP_PERMS_ALL = 0x3

PAACE_DD_TO_HOST = 0x0
PAACE_DD_TO_IO = 0x1
PAACE_PT_PRIMARY = 0x0
PAACE_PT_SECONDARY = 0x1
PAACE_V_INVALID = 0x0
PAACE_V_VALID = 0x1
PAACE_MW_SUBWINDOWS = 0x1

PAACE_WSE_4K = 0xB
PAACE_WSE_8K = 0xC
PAACE_WSE_16K = 0xD
PAACE_WSE_32K = 0xE
PAACE_WSE_64K = 0xF
PAACE_WSE_128K = 0x10
PAACE_WSE_256K = 0x11
PAACE_WSE_512K = 0x12
PAACE_WSE_1M = 0x13
PAACE_WSE_2M = 0x14
PAACE_WSE_4M = 0x15
PAACE_WSE_8M = 0x16
PAACE_WSE_16M = 0x17
PAACE_WSE_32M = 0x18
PAACE_WSE_64M = 0x19
PAACE_WSE_128M = 0x1A
PAACE_WSE_256M = 0x1B
PAACE_WSE_512M = 0x1C
PAACE_WSE_1G = 0x1D
PAACE_WSE_2G = 0x1E
PAACE_WSE_4G = 0x1F

PAACE_ATM_NO_XLATE = 0x00
PAACE_ATM_WINDOW_XLATE = 0x01
PAACE_ATM_PAGE_XLATE = 0x02
PAACE_ATM_WIN_PG_XLATE = PAACE_ATM_WINDOW_XLATE | PAACE_ATM_PAGE_XLATE
PAACE_OTM_NO_XLATE = 0x00
PAACE_OTM_IMMEDIATE = 0x01
PAACE_OTM_INDEXED = 0x02
PAACE_OTM_RESERVED = 0x03

PAACE_M_COHERENCE_REQ = 0x01

# --------------------------------------------------------------------------------------------
# PAACE bit fields (fsl_pamu.h "PAACE Bit Field Defines"); mask + _SHIFT, as set_bf/get_bf use
# --------------------------------------------------------------------------------------------

PPAACE_AF_WBAL = 0xFFFFF000
PPAACE_AF_WBAL_SHIFT = 12
PPAACE_AF_WSE = 0x00000FC0
PPAACE_AF_WSE_SHIFT = 6
PPAACE_AF_MW = 0x00000020
PPAACE_AF_MW_SHIFT = 5

SPAACE_AF_LIODN = 0xFFFF0000
SPAACE_AF_LIODN_SHIFT = 16

PAACE_AF_AP = 0x00000018
PAACE_AF_AP_SHIFT = 3
PAACE_AF_DD = 0x00000004
PAACE_AF_DD_SHIFT = 2
PAACE_AF_PT = 0x00000002
PAACE_AF_PT_SHIFT = 1
PAACE_AF_V = 0x00000001
PAACE_AF_V_SHIFT = 0

PAACE_DA_HOST_CR = 0x80
PAACE_DA_HOST_CR_SHIFT = 7

PAACE_IA_CID = 0x00FF0000
PAACE_IA_CID_SHIFT = 16
PAACE_IA_WCE = 0x000000F0
PAACE_IA_WCE_SHIFT = 4
PAACE_IA_ATM = 0x0000000C
PAACE_IA_ATM_SHIFT = 2
PAACE_IA_OTM = 0x00000003
PAACE_IA_OTM_SHIFT = 0

PAACE_WIN_TWBAL = 0xFFFFF000
PAACE_WIN_TWBAL_SHIFT = 12
PAACE_WIN_SWSE = 0x00000FC0
PAACE_WIN_SWSE_SHIFT = 6

# The byte members of ``domain_attr.to_host`` and ``op_encode.index_ot`` as fields of their
# big-endian word (struct layout of fsl_pamu.h; these names are vfiosim's).
PAACE_DA_HOST_DID = 0xFF000000
PAACE_DA_HOST_DID_SHIFT = 24
PAACE_DA_HOST_PID = 0x00FF0000
PAACE_DA_HOST_PID_SHIFT = 16
PAACE_DA_HOST_SNPID = 0x0000FF00
PAACE_DA_HOST_SNPID_SHIFT = 8
PAACE_OP_INDEX_OMI = 0x0000FFFF
PAACE_OP_INDEX_OMI_SHIFT = 0

# --------------------------------------------------------------------------------------------
# PAMU registers (fsl_pamu.h); only the ones the model implements
# --------------------------------------------------------------------------------------------

PAMU_OFFSET = 0x1000
PAMU_AVS1 = 0x0050
PAMU_AVS1_AV = 0x1
PAMU_AVS1_OTV = 0x6
PAMU_AVS1_APV = 0x78
PAMU_AVS1_WAV = 0x380
PAMU_AVS1_LAV = 0x1C00
PAMU_AVS1_GCV = 0x2000
PAMU_AVS1_PDV = 0x4000
PAMU_AV_MASK = (
    PAMU_AVS1_AV | PAMU_AVS1_OTV | PAMU_AVS1_APV | PAMU_AVS1_WAV | PAMU_AVS1_LAV
    | PAMU_AVS1_GCV | PAMU_AVS1_PDV
)
PAMU_AVS1_LIODN_SHIFT = 16
PAMU_LAV_LIODN_NOT_IN_PPAACT = 0x400
PAMU_AVS2 = 0x0054
PAMU_AVAH = 0x0058
PAMU_AVAL = 0x005C
PAMU_PC3 = 0x0C08
PAMU_PICS = 0x0C1C
PAMU_ACCESS_VIOLATION_STAT = 0x8
PAMU_ACCESS_VIOLATION_ENABLE = 0x4
PAMU_PC3_MWCE_SHIFT = 21
PAMU_PC3_MWCE_MASK = 0xF


def PAMU_PC3_MWCE(pc3: int) -> int:  # noqa: N802 - the kernel's macro name
    """``PAMU_PC3_MWCE(X)``: the maximum-window-count encoding in PC3."""
    return (pc3 >> PAMU_PC3_MWCE_SHIFT) & PAMU_PC3_MWCE_MASK


# --------------------------------------------------------------------------------------------
# Bit-field helpers and encodings
# --------------------------------------------------------------------------------------------


def _shift_of(m: int) -> int:
    """``m##_SHIFT`` for a contiguous mask: the position of its lowest set bit."""
    return (m & -m).bit_length() - 1


def set_bf(v: int, m: int, x: int) -> int:
    """``set_bf(v, m, x)``: ``(v & ~m) | ((x << m##_SHIFT) & m)``; returns the new word."""
    return (v & ~m & 0xFFFFFFFF) | ((x << _shift_of(m)) & m)


def get_bf(v: int, m: int) -> int:
    """``get_bf(v, m)``: ``(v & m) >> m##_SHIFT``."""
    return (v & m) >> _shift_of(m)


def map_addrspace_size_to_wse(addrspace_size: int) -> int:
    """Window size encoding: size = 2^(WSE+1), so WSE = fls64(size) − 2 (4 KiB → 0xB).

    The kernel BUG()s on a size that is not a power of two; so does this (ValueError).
    """
    if addrspace_size <= 0 or addrspace_size & (addrspace_size - 1):
        raise ValueError(f"map_addrspace_size_to_wse: {addrspace_size:#x} not a power of 2")
    return addrspace_size.bit_length() - 2


def map_subwindow_cnt_to_wce(subwindow_cnt: int) -> int:
    """Window count encoding: count = 2^(WCE+1), so WCE = __ffs(count) − 1."""
    if subwindow_cnt < 2:
        raise ValueError(f"map_subwindow_cnt_to_wce: count {subwindow_cnt} < 2")
    return (subwindow_cnt & -subwindow_cnt).bit_length() - 2


def wse_to_size(wse: int) -> int:
    """Inverse of :func:`map_addrspace_size_to_wse`: 2^(WSE+1)."""
    return 1 << (wse + 1)


def prot_to_ap(prot: int) -> int:
    """``IOMMU_READ`` (1) → query, ``IOMMU_WRITE`` (2) → update (fsl_pamu_window_enable)."""
    ap = PAACE_AP_PERMS_DENIED
    if prot & 1:
        ap |= PAACE_AP_PERMS_QUERY
    if prot & 2:
        ap |= PAACE_AP_PERMS_UPDATE
    return ap


# --------------------------------------------------------------------------------------------
# One 64-byte entry
# --------------------------------------------------------------------------------------------

PAACE_OFF_WBAH = 0x00
PAACE_OFF_ADDR_BITFIELDS = 0x04
PAACE_OFF_DOMAIN_ATTR = 0x08
PAACE_OFF_IMPL_ATTR = 0x0C
PAACE_OFF_TWBAH = 0x10
PAACE_OFF_WIN_BITFIELDS = 0x14
PAACE_OFF_FSPI = 0x18
PAACE_OFF_OP_ENCODE = 0x1C

_U32 = struct.Struct(">I")
_ENTRY_WORDS = struct.Struct(">8I")  # the eight defined words, offsets 0x00-0x1C


def _word(off: int) -> property:
    def fget(self: Paace) -> int:
        return _U32.unpack_from(self.table, self.base + off)[0]

    def fset(self: Paace, value: int) -> None:
        _U32.pack_into(self.table, self.base + off, value & 0xFFFFFFFF)

    return property(fget, fset)


class Paace:
    """A view of one ``struct paace`` (64 bytes, big-endian) inside the PAACT or SPAACT.

    What ``pamu_get_ppaace``/``pamu_get_spaace`` return: the kernel's ``struct paace *``.
    Layout (fsl_pamu.h ``struct paace``)::

        PAACE Offset 0x00   u32 wbah              window base address high (primary only)
              Offset 0x04   u32 addr_bitfields    P: WBAL[31:12] WSE[11:6] MW[5]
                                                  S: LIODN[31:16]
                                                  both: AP[4:3] DD[2] PT[1] V[0]
        PAACE Offset 0x08   u32 domain_attr       to_host: did[31:24] pid[23:16]
                                                  snpid[15:8] coherency_required[7]
              Offset 0x0C   u32 impl_attr         CID[23:16] WCE[7:4] ATM[3:2] OTM[1:0]
        PAACE Offset 0x10   u32 twbah             translated window base high (rpn >> 20)
              Offset 0x14   u32 win_bitfields     TWBAL[31:12] SWSE[11:6]
        PAACE Offset 0x18   u32 fspi              first secondary PAACE index (primary)
              Offset 0x1C   u32 op_encode         index_ot: reserved[31:16] omi[15:0]
        PAACE Offsets 0x20-0x38  u32 reserved[8]
    """

    __slots__ = ("table", "index", "base", "secondary")

    def __init__(self, table: bytearray, index: int, secondary: bool) -> None:
        self.table = table
        self.index = index
        self.base = index * PAACE_SIZE
        self.secondary = secondary

    wbah = _word(PAACE_OFF_WBAH)
    addr_bitfields = _word(PAACE_OFF_ADDR_BITFIELDS)
    domain_attr = _word(PAACE_OFF_DOMAIN_ATTR)
    impl_attr = _word(PAACE_OFF_IMPL_ATTR)
    twbah = _word(PAACE_OFF_TWBAH)
    win_bitfields = _word(PAACE_OFF_WIN_BITFIELDS)
    fspi = _word(PAACE_OFF_FSPI)
    op_encode = _word(PAACE_OFF_OP_ENCODE)

    def words(self) -> tuple[int, ...]:
        """The eight defined words (offsets 0x00..0x1C)."""
        return _ENTRY_WORDS.unpack_from(self.table, self.base)

    def raw(self) -> bytes:
        """All 64 bytes of the entry as the hardware holds them (big-endian)."""
        return bytes(self.table[self.base:self.base + PAACE_SIZE])

    def clear(self) -> None:
        """Zero the whole entry."""
        self.table[self.base:self.base + PAACE_SIZE] = bytes(PAACE_SIZE)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Paace) and other.table is self.table and other.index == self.index
        )

    def __hash__(self) -> int:
        return hash((id(self.table), self.index))

    def __repr__(self) -> str:
        kind = "spaace" if self.secondary else "ppaace"
        return f"<{kind} {self.index:#x} " + " ".join(f"{w:08x}" for w in self.words()) + ">"


def decode_paace(words: tuple[int, ...], secondary: bool) -> dict[str, Any]:
    """Decode the eight words of a PAACE or SPAACE into named fields (for dumps and tests)."""
    wbah, af, da, ia, twbah, wb, fspi, op = words
    d: dict[str, Any] = {"type": "secondary" if secondary else "primary"}
    if secondary:
        d["liodn"] = get_bf(af, SPAACE_AF_LIODN)
    else:
        wse = get_bf(af, PPAACE_AF_WSE)
        d["wbah"] = wbah
        d["wbal"] = get_bf(af, PPAACE_AF_WBAL)
        d["wba"] = (wbah << 32) | (af & PPAACE_AF_WBAL)
        d["wse"] = wse
        d["window_size"] = wse_to_size(wse) if wse else 0
        d["mw"] = get_bf(af, PPAACE_AF_MW)
        d["fspi"] = fspi
    d["ap"] = get_bf(af, PAACE_AF_AP)
    d["dd"] = get_bf(af, PAACE_AF_DD)
    d["pt"] = get_bf(af, PAACE_AF_PT)
    d["v"] = get_bf(af, PAACE_AF_V)
    d["did"] = get_bf(da, PAACE_DA_HOST_DID)
    d["pid"] = get_bf(da, PAACE_DA_HOST_PID)
    d["snpid"] = get_bf(da, PAACE_DA_HOST_SNPID)
    d["coherency_required"] = get_bf(da, PAACE_DA_HOST_CR)
    d["cid"] = get_bf(ia, PAACE_IA_CID)
    d["wce"] = get_bf(ia, PAACE_IA_WCE)
    if not secondary:
        d["subwindows"] = (1 << (d["wce"] + 1)) if d["mw"] else 1
    d["atm"] = get_bf(ia, PAACE_IA_ATM)
    d["otm"] = get_bf(ia, PAACE_IA_OTM)
    d["twbah"] = twbah
    d["twbal"] = get_bf(wb, PAACE_WIN_TWBAL)
    rpn = (twbah << 20) | get_bf(wb, PAACE_WIN_TWBAL)
    d["rpn"] = rpn
    d["twba"] = rpn << PAMU_PAGE_SHIFT
    swse = get_bf(wb, PAACE_WIN_SWSE)
    d["swse"] = swse
    d["subwindow_mapped_size"] = wse_to_size(swse) if swse else 0
    d["omi"] = get_bf(op, PAACE_OP_INDEX_OMI)
    d["words"] = [f"{w:08x}" for w in words]
    return d


# --------------------------------------------------------------------------------------------
# Access violations
# --------------------------------------------------------------------------------------------

#: Reasons of an access violation (SPEC §7.4), in the order translation checks them.
AV_LIODN_NOT_IN_PPAACT = "liodn_not_in_ppaact"  # LIODN >= PAACE_NUMBER_ENTRIES
AV_LIODN_INVALID = "liodn_invalid"              # rule 1: primary V = 0
AV_OUTSIDE_APERTURE = "outside_aperture"        # rule 2
AV_WINDOW_INVALID = "window_invalid"            # rule 3: primary AP denied / SPAACE V = 0
AV_OUTSIDE_MAPPING = "outside_window_mapping"   # rule 4: past the window's mapped size
AV_PERMISSION = "permission"                    # rule 5: AP lacks query (read) / update (write)
AV_TRANSLATION_MODE = "unsupported_translation"  # ATM page translation: no page tables here

_AVS1_FIELD_FOR_REASON = {
    AV_LIODN_NOT_IN_PPAACT: PAMU_AVS1_LAV,
    AV_LIODN_INVALID: PAMU_AVS1_LAV,
    AV_OUTSIDE_APERTURE: PAMU_AVS1_WAV,
    AV_WINDOW_INVALID: PAMU_AVS1_WAV,
    AV_OUTSIDE_MAPPING: PAMU_AVS1_WAV,
    AV_PERMISSION: PAMU_AVS1_APV,
    AV_TRANSLATION_MODE: PAMU_AVS1_WAV,
}


@dataclass(frozen=True)
class AccessViolation:
    """One access violation as PAMU reports it (AVS1/AVA), with the model's reason.

    ``iova``/``length`` are the whole transaction; ``address`` is the first failing byte
    (what the AVAH:AVAL registers latch).
    """

    liodn: int
    iova: int
    length: int
    direction: str  # "read" | "write"
    reason: str
    address: int
    time_ns: int


@dataclass
class AvStatus:
    """Per-LIODN access-violation status (the AVS1/AVA latch, kept per LIODN)."""

    liodn: int
    count: int = 0
    last: AccessViolation | None = None
    disabled_by_av: bool = False


def _iommu_fault(reason: str, violation: AccessViolation) -> IommuFault:
    """``hw.iommu.IommuFault(reason)`` (architecture.md §6), carrying ``.violation``."""
    exc = IommuFault(reason)
    exc.violation = violation  # type: ignore[attr-defined]
    return exc


class _Clock(Protocol):
    def now_ns(self) -> int: ...


# --------------------------------------------------------------------------------------------
# The PAMU
# --------------------------------------------------------------------------------------------


class Pamu:
    """The PAMU of one SoC: PAACT, SPAACT with its gen_pool, capability and AV registers.

    ``cpu_model`` is ``"e500mc"`` (p4080: ``num_cpus`` cores, one thread each, private L2)
    or ``"e6500"`` (t4240: ``num_cpus`` hardware threads, 2 per core, 4 cores per L2
    cluster).  ``liodns`` are the LIODNs the device tree names (``fsl,liodn``): they get
    the identity window at reset, as ``setup_liodns`` does; all other entries are zero.

    Registers (one PAMU block of ``PAMU_OFFSET`` bytes; only these are modelled)::

        offset  register  bits
        0x0050  AVS1      LIODN[31:16] PDV[14] GCV[13] LAV[12:10] WAV[9:7] APV[6:3]
                          OTV[2:1] AV[0]; write of AVS1 & PAMU_AV_MASK clears it
        0x0054  AVS2      (reads 0)
        0x0058  AVAH      access violation address, high word
        0x005C  AVAL      access violation address, low word
        0x0C08  PC3       MWCE[24:21]: max subwindows = 1 << (1 + MWCE)
        0x0C1C  PICS      AV_STAT[3] (write 1 to clear) AV_ENABLE[2]

    The AV latch holds the first violation until software clears AVS1; the sub-field
    values of LAV/WAV/APV are not documented publicly, so the model sets each field to 1
    (LAV to ``PAMU_LAV_LIODN_NOT_IN_PPAACT`` for an out-of-table LIODN) and keeps the
    precise reason in :class:`AccessViolation`.
    """

    def __init__(
        self,
        *,
        max_subwindows: int = 256,
        paact_entries: int = PAACE_NUMBER_ENTRIES,
        spaact_entries: int = SPAACE_NUMBER_ENTRIES,
        cpu_model: str = "e500mc",
        num_cpus: int = 8,
        l1_stash_as_l2: bool = False,
        av_disables_liodn: bool = True,
        liodns: Iterable[int] = (),
        clock: _Clock | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if max_subwindows < 2 or max_subwindows & (max_subwindows - 1) or max_subwindows > 1 << 16:
            raise ValueError(f"max_subwindows {max_subwindows} is not 1 << (1 + MWCE)")
        if cpu_model not in ("e500mc", "e6500"):
            raise ValueError(f"cpu_model {cpu_model!r}: expected 'e500mc' or 'e6500'")
        if not 0 < paact_entries <= 0x1000 or not 0 < spaact_entries <= 1 << 16:
            raise ValueError("paact_entries/spaact_entries out of range")
        self.paact_entries = paact_entries
        self.spaact_entries = spaact_entries
        self.pc3 = (max_subwindows.bit_length() - 2) << PAMU_PC3_MWCE_SHIFT
        self.cpu_model = cpu_model
        self.num_cpus = num_cpus
        self.l1_stash_as_l2 = l1_stash_as_l2
        self.av_disables_liodn = av_disables_liodn
        self.boot_liodns = sorted(set(liodns))
        self.clock = clock
        self._log = log
        self.ppaact = bytearray(PAACE_SIZE * paact_entries)
        self.spaact = bytearray(PAACE_SIZE * spaact_entries)
        # gen_pool of SPAACEs, min_alloc_order = ilog2(sizeof(struct paace)): one flag per
        # entry; blocks[fspi] = length of the allocated block starting there.
        self._spaace_used = bytearray(spaact_entries)
        self._spaace_blocks: dict[int, int] = {}
        self.violations: list[AccessViolation] = []
        self.av_status: dict[int, AvStatus] = {}
        self.avs1 = 0
        self.ava = 0
        self.pics = PAMU_ACCESS_VIOLATION_ENABLE
        self.reset()

    @classmethod
    def from_machine(cls, machine: Machine) -> Pamu:
        """Build the PAMU of a machine: ``machine.pamu_config`` ([pamu] of the machine file),
        the LIODNs of its PCIe controllers (identity-mapped at boot), its options, clock
        and log.  ``cpu_model`` comes from ``[pamu] cpu_model`` when present, else e6500
        for more than 8 CPUs (t4240) and e500mc otherwise (p4080)."""
        cfg = machine.pamu_config
        cpus = int(cfg.get("cpus", 8))
        cpu_model = str(cfg.get("cpu_model") or ("e6500" if cpus > 8 else "e500mc"))
        return cls(
            max_subwindows=int(cfg.get("max_subwindows", 256)),
            paact_entries=int(cfg.get("paact_entries", PAACE_NUMBER_ENTRIES)),
            spaact_entries=int(cfg.get("spaact_entries", SPAACE_NUMBER_ENTRIES)),
            cpu_model=cpu_model,
            num_cpus=cpus,
            l1_stash_as_l2=bool(cfg.get("l1_stash_as_l2", False)),
            av_disables_liodn=bool(getattr(machine.options, "av_disables_liodn", True)),
            liodns=[int(c["liodn"]) for c in getattr(machine, "controllers", [])],
            clock=getattr(machine, "clock", None),
            log=getattr(machine, "log", None),
        )

    # ---- machine start -----------------------------------------------------------------

    def reset(self) -> None:
        """Power-on: zero the tables, empty the SPAACE pool, identity-map the boot LIODNs."""
        self.ppaact[:] = bytes(len(self.ppaact))
        self.spaact[:] = bytes(len(self.spaact))
        self._spaace_used[:] = bytes(self.spaact_entries)
        self._spaace_blocks.clear()
        self.violations.clear()
        self.av_status.clear()
        self.avs1 = 0
        self.ava = 0
        self.pics = PAMU_ACCESS_VIOLATION_ENABLE
        for liodn in self.boot_liodns:
            self.pamu_init_ppaace_identity(liodn)

    @property
    def max_subwindows(self) -> int:
        """``pamu_get_max_subwin_cnt()``: 1 << (1 + PC3.MWCE)."""
        return 1 << (1 + PAMU_PC3_MWCE(self.pc3))

    def pamu_get_max_subwin_cnt(self) -> int:
        """Models pamu_get_max_subwin_cnt() (fsl_pamu.c)."""
        return self.max_subwindows

    # ---- entries -----------------------------------------------------------------------

    def pamu_get_ppaace(self, liodn: int) -> Paace | None:
        """Models pamu_get_ppaace(): the primary entry, None for LIODN ≥ 0x500."""
        if not 0 <= liodn < self.paact_entries:
            return None
        return Paace(self.ppaact, liodn, secondary=False)

    def pamu_get_spaace(self, paace: Paace, wnum: int) -> Paace | None:
        """Models pamu_get_spaace(): SPAACE ``fspi + wnum`` if ``wnum`` < 2^(WCE+1).

        quirk: the bound is the window count, not count − 1, so ``wnum`` = count − 1 reaches
        the SPAACE just past the LIODN's block (callers pass ``subwin − 1`` < count − 1).
        The kernel indexes the SPAACT without a bound; the model returns None past its end.
        """
        subwin_cnt = 1 << (get_bf(paace.impl_attr, PAACE_IA_WCE) + 1)
        if not 0 <= wnum < subwin_cnt:
            return None
        index = paace.fspi + wnum
        if index >= self.spaact_entries:
            return None
        return Paace(self.spaact, index, secondary=True)

    @staticmethod
    def _init_ppaace(ppaace: Paace) -> None:
        """Models pamu_init_ppaace(): PT = primary, coherency required."""
        ppaace.addr_bitfields = set_bf(ppaace.addr_bitfields, PAACE_AF_PT, PAACE_PT_PRIMARY)
        ppaace.domain_attr = set_bf(ppaace.domain_attr, PAACE_DA_HOST_CR, PAACE_M_COHERENCE_REQ)

    @staticmethod
    def _init_spaace(spaace: Paace) -> None:
        """Models pamu_init_spaace(): PT = secondary, coherency required."""
        spaace.addr_bitfields = set_bf(spaace.addr_bitfields, PAACE_AF_PT, PAACE_PT_SECONDARY)
        spaace.domain_attr = set_bf(spaace.domain_attr, PAACE_DA_HOST_CR, PAACE_M_COHERENCE_REQ)

    def pamu_init_ppaace_identity(self, liodn: int) -> int:
        """The boot identity window of one LIODN, as setup_liodns() writes it.

        WSE 35 (2^36 bytes) at 0, ATM no translation, AP all, then pamu_enable_liodn().
        Returns -ENOENT for a LIODN outside the PAACT (setup_liodns skips those).
        """
        ppaace = self.pamu_get_ppaace(liodn)
        if ppaace is None:
            return -errno.ENOENT
        self._init_ppaace(ppaace)
        ppaace.addr_bitfields = set_bf(ppaace.addr_bitfields, PPAACE_AF_WSE, PAMU_IDENTITY_WSE)
        ppaace.wbah = 0
        ppaace.addr_bitfields = set_bf(ppaace.addr_bitfields, PPAACE_AF_WBAL, 0)
        ppaace.impl_attr = set_bf(ppaace.impl_attr, PAACE_IA_ATM, PAACE_ATM_NO_XLATE)
        ppaace.addr_bitfields = set_bf(ppaace.addr_bitfields, PAACE_AF_AP, PAACE_AP_PERMS_ALL)
        return self.pamu_enable_liodn(liodn)

    def pamu_enable_liodn(self, liodn: int) -> int:
        """Models pamu_enable_liodn(): set V; -ENOENT no entry, -EINVAL WSE not configured."""
        ppaace = self.pamu_get_ppaace(liodn)
        if ppaace is None:
            return -errno.ENOENT
        if not get_bf(ppaace.addr_bitfields, PPAACE_AF_WSE):
            return -errno.EINVAL
        ppaace.addr_bitfields = set_bf(ppaace.addr_bitfields, PAACE_AF_V, PAACE_V_VALID)
        st = self.av_status.get(liodn)
        if st is not None:
            st.disabled_by_av = False
        return 0

    def pamu_disable_liodn(self, liodn: int) -> int:
        """Models pamu_disable_liodn(): clear V; -ENOENT when there is no entry."""
        ppaace = self.pamu_get_ppaace(liodn)
        if ppaace is None:
            return -errno.ENOENT
        ppaace.addr_bitfields = set_bf(ppaace.addr_bitfields, PAACE_AF_V, PAACE_V_INVALID)
        return 0

    # ---- SPAACE pool (gen_pool) --------------------------------------------------------

    def pamu_get_fspi_and_allocate(self, subwin_cnt: int) -> int:
        """Models pamu_get_fspi_and_allocate(): first fit of ``subwin_cnt`` contiguous SPAACEs.

        Returns the index of the first, or ``ULONG_MAX`` when no run is free.  Like
        ``gen_pool_alloc(pool, 0)``, a request for 0 entries fails.
        """
        if subwin_cnt <= 0 or subwin_cnt > self.spaact_entries:
            return ULONG_MAX
        used = self._spaace_used
        start = used.find(b"\x00" * subwin_cnt)
        if start < 0:
            return ULONG_MAX
        used[start:start + subwin_cnt] = b"\x01" * subwin_cnt
        self._spaace_blocks[start] = subwin_cnt
        return start

    def _gen_pool_free(self, start: int, count: int) -> None:
        """gen_pool_free(): give ``count`` entries from ``start`` back to the pool."""
        self._spaace_used[start:start + count] = bytes(count)
        if self._spaace_blocks.get(start) == count:
            del self._spaace_blocks[start]
        else:
            # A partial or mismatched free (gen_pool trusts its caller): drop the records
            # the freed range overlaps.
            for s in [s for s, n in self._spaace_blocks.items() if s < start + count
                      and start < s + n]:
                del self._spaace_blocks[s]

    def pamu_free_subwins(self, liodn: int) -> None:
        """Models pamu_free_subwins(): if MW, free the 2^(WCE+1) − 1 SPAACEs and clear MW."""
        ppaace = self.pamu_get_ppaace(liodn)
        if ppaace is None:
            return
        if get_bf(ppaace.addr_bitfields, PPAACE_AF_MW):
            subwin_cnt = 1 << (get_bf(ppaace.impl_attr, PAACE_IA_WCE) + 1)
            fspi = ppaace.fspi
            count = min(subwin_cnt - 1, self.spaact_entries - fspi)
            if count > 0:
                self._gen_pool_free(fspi, count)
            ppaace.addr_bitfields = set_bf(ppaace.addr_bitfields, PPAACE_AF_MW, 0)

    def spaace_free_count(self) -> int:
        """Number of free SPAACEs in the pool."""
        return self.spaact_entries - sum(self._spaace_used)

    def spaace_blocks(self) -> dict[int, int]:
        """Allocated SPAACE blocks: {fspi: entry count}."""
        return dict(self._spaace_blocks)

    # ---- configuration -----------------------------------------------------------------

    def pamu_config_ppaace(
        self,
        liodn: int,
        win_addr: int,
        win_size: int,
        omi: int,
        rpn: int,
        snoopid: int,
        stashid: int,
        subwin_cnt: int,
        prot: int,
    ) -> int:
        """Models pamu_config_ppaace() (fsl_pamu.c): program the primary PAACE of ``liodn``.

        Checks, in the kernel's order: ``win_size`` a power of two ≥ 4 KiB (-EINVAL);
        ``win_addr`` aligned to it (-EINVAL); the entry exists (-ENOENT).  Then WSE, PT, CR,
        WBAH/WBAL; ``omi`` < 16 sets OTM indexed, any other defined value is -EINVAL (after
        the fields above are written, as in the kernel); ``stashid``/``snoopid`` unless
        ``~0``.  ``subwin_cnt`` ≠ 0: allocate ``subwin_cnt − 1`` SPAACEs (-EINVAL "spaace
        indexes exhausted"), WCE, MW = 1, fspi; the window fields are left to
        ``pamu_config_spaace(subwin 0)``.  ``subwin_cnt`` = 0: one window, ATM window
        translation at ``rpn``, AP = ``prot`` (a PAACE_AP_PERMS_* value), WCE 0, MW 0.
        ``subwin_cnt`` = 1 asks the pool for 0 entries and fails like gen_pool_alloc(0);
        fsl_pamu_domain.c passes 0 for one window.  The V bit is not touched.
        """
        if win_size <= 0 or win_size & (win_size - 1) or win_size < PAMU_PAGE_SIZE:
            return -errno.EINVAL
        if win_addr & (win_size - 1):
            return -errno.EINVAL
        ppaace = self.pamu_get_ppaace(liodn)
        if ppaace is None:
            return -errno.ENOENT

        af = set_bf(ppaace.addr_bitfields, PPAACE_AF_WSE, map_addrspace_size_to_wse(win_size))
        ppaace.addr_bitfields = af
        self._init_ppaace(ppaace)
        ppaace.wbah = win_addr >> (PAMU_PAGE_SHIFT + 20)
        ppaace.addr_bitfields = set_bf(
            ppaace.addr_bitfields, PPAACE_AF_WBAL, win_addr >> PAMU_PAGE_SHIFT
        )

        if 0 <= omi < OME_NUMBER_ENTRIES:
            ppaace.impl_attr = set_bf(ppaace.impl_attr, PAACE_IA_OTM, PAACE_OTM_INDEXED)
            ppaace.op_encode = set_bf(ppaace.op_encode, PAACE_OP_INDEX_OMI, omi)
        elif omi != PAMU_NOT_DEFINED:
            return -errno.EINVAL

        if stashid != PAMU_NOT_DEFINED:
            ppaace.impl_attr = set_bf(ppaace.impl_attr, PAACE_IA_CID, stashid)
        if snoopid != PAMU_NOT_DEFINED:
            ppaace.domain_attr = set_bf(ppaace.domain_attr, PAACE_DA_HOST_SNPID, snoopid)

        if subwin_cnt:
            # The first subwindow lives in the primary PAACE.
            fspi = self.pamu_get_fspi_and_allocate(subwin_cnt - 1)
            if fspi == ULONG_MAX:
                return -errno.EINVAL  # "spaace indexes exhausted"
            ppaace.impl_attr = set_bf(
                ppaace.impl_attr, PAACE_IA_WCE, map_subwindow_cnt_to_wce(subwin_cnt)
            )
            ppaace.addr_bitfields = set_bf(ppaace.addr_bitfields, PPAACE_AF_MW, 0x1)
            ppaace.fspi = fspi
        else:
            ppaace.impl_attr = set_bf(ppaace.impl_attr, PAACE_IA_ATM, PAACE_ATM_WINDOW_XLATE)
            ppaace.twbah = rpn >> 20
            ppaace.win_bitfields = set_bf(ppaace.win_bitfields, PAACE_WIN_TWBAL, rpn)
            ppaace.addr_bitfields = set_bf(ppaace.addr_bitfields, PAACE_AF_AP, prot)
            ppaace.impl_attr = set_bf(ppaace.impl_attr, PAACE_IA_WCE, 0)
            ppaace.addr_bitfields = set_bf(ppaace.addr_bitfields, PPAACE_AF_MW, 0)
        return 0

    def pamu_config_spaace(
        self,
        liodn: int,
        subwin_cnt: int,
        subwin: int,
        subwin_size: int,
        omi: int,
        rpn: int,
        snoopid: int,
        stashid: int,
        enable: int,
        prot: int,
    ) -> int:
        """Models pamu_config_spaace() (fsl_pamu.c): program subwindow ``subwin`` of ``liodn``.

        ``subwin_cnt`` = 0 → -EINVAL.  Subwindow 0 is the primary entry; for
        0 < ``subwin`` < ``subwin_cnt`` the SPAACE ``fspi + subwin − 1``, initialised (PT
        secondary, CR, LIODN) if it is not valid yet.  No entry → -ENOENT;
        ``subwin_size`` not a power of two ≥ 4 KiB → -EINVAL; ``rpn`` = ULONG_MAX → -EINVAL.
        Then SWSE, ATM window translation, TWBAH/TWBAL = ``rpn``, AP = ``prot``, snoop id,
        omi (a bad one → -EINVAL after those writes), stash id, and V = 1 if ``enable``.

        quirk: fsl_pamu.c programs the *primary* entry when ``subwin`` ≥ ``subwin_cnt``
        (the SPAACE lookup is skipped and ``paace`` still points at the primary).
        """
        if not subwin_cnt:
            return -errno.EINVAL
        paace = self.pamu_get_ppaace(liodn)
        if 0 < subwin < subwin_cnt and paace is not None:
            paace = self.pamu_get_spaace(paace, subwin - 1)
            if paace is not None and not paace.addr_bitfields & PAACE_V_VALID:
                self._init_spaace(paace)
                paace.addr_bitfields = set_bf(paace.addr_bitfields, SPAACE_AF_LIODN, liodn)
        if paace is None:
            return -errno.ENOENT
        if subwin_size <= 0 or subwin_size & (subwin_size - 1) or subwin_size < PAMU_PAGE_SIZE:
            return -errno.EINVAL
        if rpn == ULONG_MAX:
            return -errno.EINVAL

        paace.win_bitfields = set_bf(
            paace.win_bitfields, PAACE_WIN_SWSE, map_addrspace_size_to_wse(subwin_size)
        )
        paace.impl_attr = set_bf(paace.impl_attr, PAACE_IA_ATM, PAACE_ATM_WINDOW_XLATE)
        paace.twbah = rpn >> 20
        paace.win_bitfields = set_bf(paace.win_bitfields, PAACE_WIN_TWBAL, rpn)
        paace.addr_bitfields = set_bf(paace.addr_bitfields, PAACE_AF_AP, prot)

        if snoopid != PAMU_NOT_DEFINED:
            paace.domain_attr = set_bf(paace.domain_attr, PAACE_DA_HOST_SNPID, snoopid)
        if 0 <= omi < OME_NUMBER_ENTRIES:
            paace.impl_attr = set_bf(paace.impl_attr, PAACE_IA_OTM, PAACE_OTM_INDEXED)
            paace.op_encode = set_bf(paace.op_encode, PAACE_OP_INDEX_OMI, omi)
        elif omi != PAMU_NOT_DEFINED:
            return -errno.EINVAL
        if stashid != PAMU_NOT_DEFINED:
            paace.impl_attr = set_bf(paace.impl_attr, PAACE_IA_CID, stashid)
        if enable:
            paace.addr_bitfields = set_bf(paace.addr_bitfields, PAACE_AF_V, PAACE_V_VALID)
        return 0

    def pamu_disable_spaace(self, liodn: int, subwin: int) -> int:
        """Models pamu_disable_spaace(): subwin > 0 clears that SPAACE's V, 0 denies the primary.

        -ENOENT when the LIODN or the SPAACE (``subwin − 1`` ≥ 2^(WCE+1)) does not exist.
        """
        paace = self.pamu_get_ppaace(liodn)
        if paace is None:
            return -errno.ENOENT
        if subwin:
            paace = self.pamu_get_spaace(paace, subwin - 1)
            if paace is None:
                return -errno.ENOENT
            paace.addr_bitfields = set_bf(paace.addr_bitfields, PAACE_AF_V, PAACE_V_INVALID)
        else:
            paace.addr_bitfields = set_bf(paace.addr_bitfields, PAACE_AF_AP, PAACE_AP_PERMS_DENIED)
        return 0

    def pamu_update_paace_stash(self, liodn: int, subwin: int, value: int) -> int:
        """Models pamu_update_paace_stash(): CID of the primary (subwin 0) or SPAACE subwin−1."""
        paace = self.pamu_get_ppaace(liodn)
        if paace is None:
            return -errno.ENOENT
        if subwin:
            paace = self.pamu_get_spaace(paace, subwin - 1)
            if paace is None:
                return -errno.ENOENT
        paace.impl_attr = set_bf(paace.impl_attr, PAACE_IA_CID, value)
        return 0

    # ---- stash ids ---------------------------------------------------------------------

    def get_stash_id(self, stash_dest_hint: int, vcpu: int) -> int:
        """Models get_stash_id(): the cache stash id of {cache level, cpu}; ~0 when unknown.

        Numbering as u-boot writes ``cache-stash-id`` (see the module docstring).  L3 never
        looks at ``vcpu``; L1/L2 need a CPU of the machine.  With ``l1_stash_as_l2``
        (erratum A-007907) an L1 request is answered with the L2 id.
        """
        if stash_dest_hint == PAMU_ATTR_CACHE_L3:
            return 1
        if stash_dest_hint not in (PAMU_ATTR_CACHE_L1, PAMU_ATTR_CACHE_L2):
            return PAMU_NOT_DEFINED
        if not 0 <= vcpu < self.num_cpus:
            return PAMU_NOT_DEFINED
        if stash_dest_hint == PAMU_ATTR_CACHE_L1 and self.l1_stash_as_l2:
            stash_dest_hint = PAMU_ATTR_CACHE_L2
        if self.cpu_model == "e500mc":
            base = 32 + 2 * vcpu
            return base if stash_dest_hint == PAMU_ATTR_CACHE_L1 else base + 1
        core = vcpu // 2
        if stash_dest_hint == PAMU_ATTR_CACHE_L1:
            return 32 + 4 * core
        return 33 + 2 * (vcpu // 8)

    # ---- translation (SPEC §7.4) ---------------------------------------------------------

    def translate(self, liodn: int, iova: int, size: int, write: bool) -> list[tuple[int, int]]:
        """Translate one transaction of ``liodn``; returns [(phys, length)] per window.

        Reads the entry words (never a side table), SPEC §7.4 rules in order: LIODN in the
        PAACT and V = 1; inside the aperture [WBA, WBA + 2^(WSE+1)); window
        k = (iova − WBA) / subwindow size valid (k = 0: primary AP ≠ denied; k > 0: SPAACE
        V = 1); within the window's mapped size (SWSE; the aperture for a single window);
        AP allows the direction; phys = rpn·4096 + offset (ATM no translation: phys = iova).
        Cost is O(1) in the window count: one primary and at most one SPAACE per window
        touched.  A transaction crossing windows is split; any failing part fails it all,
        is recorded, may disable the LIODN (``av_disables_liodn``), and raises
        ``hw.iommu.IommuFault(reason)`` with ``.violation``.
        """
        if size <= 0:
            return []
        if not 0 <= liodn < self.paact_entries:
            raise self._violation(liodn, iova, size, write, AV_LIODN_NOT_IN_PPAACT, iova)
        wbah, af, _da, ia, twbah, wb, fspi, _op = _ENTRY_WORDS.unpack_from(
            self.ppaact, liodn * PAACE_SIZE
        )
        if not af & PAACE_AF_V:
            raise self._violation(liodn, iova, size, write, AV_LIODN_INVALID, iova)
        wse = (af & PPAACE_AF_WSE) >> PPAACE_AF_WSE_SHIFT
        wba = (wbah << 32) | (af & PPAACE_AF_WBAL)
        ap_end = wba + (2 << wse)
        need = PAACE_AP_PERMS_UPDATE if write else PAACE_AP_PERMS_QUERY
        end = iova + size
        multi = af & PPAACE_AF_MW
        if multi:
            # subwindow size = 2^(WSE+1) / 2^(WCE+1)
            sub_shift = max(wse - ((ia & PAACE_IA_WCE) >> PAACE_IA_WCE_SHIFT), 0)
        else:
            sub_shift = wse + 1
        sub_size = 1 << sub_shift
        parts: list[tuple[int, int]] = []
        cur = iova
        while cur < end:
            if cur < wba or cur >= ap_end:
                raise self._violation(liodn, iova, size, write, AV_OUTSIDE_APERTURE, cur)
            k = (cur - wba) >> sub_shift
            wstart = wba + (k << sub_shift)
            part_end = min(end, wstart + sub_size)
            if k == 0:
                w_af, w_ia, w_twbah, w_wb = af, ia, twbah, wb
                valid = (af & PAACE_AF_AP) != 0
            else:
                index = fspi + k - 1
                if index >= self.spaact_entries:
                    raise self._violation(liodn, iova, size, write, AV_WINDOW_INVALID, cur)
                _w0, w_af, _w2, w_ia, w_twbah, w_wb, _w6, _w7 = _ENTRY_WORDS.unpack_from(
                    self.spaact, index * PAACE_SIZE
                )
                valid = (w_af & PAACE_AF_V) != 0
            if not valid:
                raise self._violation(liodn, iova, size, write, AV_WINDOW_INVALID, cur)
            if multi:
                swse = (w_wb & PAACE_WIN_SWSE) >> PAACE_WIN_SWSE_SHIFT
                mapped = (2 << swse) if swse else 0
            else:
                mapped = sub_size
            offset = cur - wstart
            if part_end - wstart > mapped:
                bad = cur if offset >= mapped else wstart + mapped
                raise self._violation(liodn, iova, size, write, AV_OUTSIDE_MAPPING, bad)
            if not ((w_af & PAACE_AF_AP) >> PAACE_AF_AP_SHIFT) & need:
                raise self._violation(liodn, iova, size, write, AV_PERMISSION, cur)
            atm = (w_ia & PAACE_IA_ATM) >> PAACE_IA_ATM_SHIFT
            if atm & PAACE_ATM_WINDOW_XLATE:
                rpn = (w_twbah << 20) | ((w_wb & PAACE_WIN_TWBAL) >> PAACE_WIN_TWBAL_SHIFT)
                phys = (rpn << PAMU_PAGE_SHIFT) + offset
            elif atm == PAACE_ATM_NO_XLATE:
                phys = cur
            else:
                raise self._violation(liodn, iova, size, write, AV_TRANSLATION_MODE, cur)
            parts.append((phys, part_end - cur))
            cur = part_end
        return parts

    def _now_ns(self) -> int:
        return self.clock.now_ns() if self.clock is not None else time.monotonic_ns()

    def _violation(
        self, liodn: int, iova: int, size: int, write: bool, reason: str, address: int
    ) -> Exception:
        """Record an access violation, run the AV handler's policy, build the exception."""
        av = AccessViolation(
            liodn=liodn,
            iova=iova,
            length=size,
            direction="write" if write else "read",
            reason=reason,
            address=address,
            time_ns=self._now_ns(),
        )
        self.violations.append(av)
        # The AVS1/AVA latch keeps the first violation until software clears it.
        if not self.avs1 & PAMU_AVS1_AV:
            fld = _AVS1_FIELD_FOR_REASON[reason]
            code = PAMU_LAV_LIODN_NOT_IN_PPAACT if reason == AV_LIODN_NOT_IN_PPAACT else (
                1 << _shift_of(fld)
            )
            self.avs1 = ((liodn & 0xFFFF) << PAMU_AVS1_LIODN_SHIFT) | code | PAMU_AVS1_AV
            self.ava = address
        self.pics |= PAMU_ACCESS_VIOLATION_STAT
        st = self.av_status.get(liodn)
        if st is None:
            st = self.av_status[liodn] = AvStatus(liodn)
        st.count += 1
        st.last = av
        ppaace = self.pamu_get_ppaace(liodn)
        if (
            self.av_disables_liodn
            and ppaace is not None
            and get_bf(ppaace.addr_bitfields, PAACE_AF_V)
        ):
            # pamu_av_isr(): "Disabling liodn"
            self.pamu_disable_liodn(liodn)
            st.disabled_by_av = True
        if self._log is not None:
            self._log(
                f"pamu: access violation liodn {liodn:#x} {av.direction} iova {iova:#x}"
                f"+{size:#x}: {reason}"
            )
        return _iommu_fault(reason, av)

    # ---- registers ---------------------------------------------------------------------

    def mmio_read(self, offset: int, size: int) -> int:
        """Read a PAMU register (see the class docstring); others read 0."""
        if offset == PAMU_AVS1:
            return self.avs1
        if offset == PAMU_AVAH:
            return (self.ava >> 32) & 0xFFFFFFFF
        if offset == PAMU_AVAL:
            return self.ava & 0xFFFFFFFF
        if offset == PAMU_PC3:
            return self.pc3
        if offset == PAMU_PICS:
            return self.pics
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        """Write a PAMU register: AVS1 with AV set clears the latch; PICS AVSTAT is w1c."""
        if offset == PAMU_AVS1:
            if value & PAMU_AV_MASK & PAMU_AVS1_AV:
                self.avs1 = 0
                self.ava = 0
        elif offset == PAMU_PICS:
            stat = self.pics & PAMU_ACCESS_VIOLATION_STAT
            if value & PAMU_ACCESS_VIOLATION_STAT:
                stat = 0
            self.pics = stat | (value & PAMU_ACCESS_VIOLATION_ENABLE)

    # ---- dumps ---------------------------------------------------------------------------

    def paace_fields(self, liodn: int) -> dict[str, Any]:
        """Decode the primary PAACE of ``liodn`` into named fields."""
        ppaace = self.pamu_get_ppaace(liodn)
        if ppaace is None:
            raise ValueError(f"LIODN {liodn:#x} is outside the PAACT")
        return decode_paace(ppaace.words(), secondary=False)

    def dump(self, liodn: int) -> dict[str, Any]:
        """The primary PAACE of ``liodn``, its SPAACEs (if MW) and its AV status."""
        d = {"liodn": liodn, "ppaace": self.paace_fields(liodn), "spaaces": []}
        ppaace = self.pamu_get_ppaace(liodn)
        assert ppaace is not None
        if get_bf(ppaace.addr_bitfields, PPAACE_AF_MW):
            subwin_cnt = 1 << (get_bf(ppaace.impl_attr, PAACE_IA_WCE) + 1)
            for w in range(1, subwin_cnt):
                sp = self.pamu_get_spaace(ppaace, w - 1)
                if sp is None:
                    break
                fields = decode_paace(sp.words(), secondary=True)
                fields["window"] = w
                fields["index"] = sp.index
                d["spaaces"].append(fields)
        st = self.av_status.get(liodn)
        d["av_status"] = None if st is None else {
            "count": st.count,
            "disabled_by_av": st.disabled_by_av,
            "last": None if st.last is None else asdict(st.last),
        }
        return d
