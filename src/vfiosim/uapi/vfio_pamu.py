"""The Freescale SDK's VFIO PAMU additions to include/uapi/linux/vfio.h (SPEC §3.6).

They never reached mainline; they shipped in the QorIQ SDK kernels
(nxp-archive/openil_linux, opennetworklinux/linux-3.8.13: include/uapi/linux/vfio.h).
The same definitions are shipped for C clients as ``vfiosim/include/vfio_pamu.h``.

Numbers collide with mainline on purpose [decision D2]:

* ``VFIO_FSL_PAMU_IOMMU`` = 2 is mainline's ``VFIO_SPAPR_TCE_IOMMU`` (the 3.8-based SDK value;
  later SDK trees moved it to 7, mainline's ``VFIO_SPAPR_TCE_v2_IOMMU``);
* ioctls 15-19 are mainline's sPAPR ``VFIO_IOMMU_ENABLE`` ... ``VFIO_IOMMU_SPAPR_TCE_CREATE``
  and Type1's ``VFIO_IOMMU_DIRTY_PAGES`` (17).

A container dispatches them by the backend SET_IOMMU chose (SPEC §3.2); no preset has both
PAMU and sPAPR.

Layout: every ``__u64`` of these structs sits at an 8-byte aligned offset, with explicit
padding before it where C has it implicitly (``__pad``).  The C header uses
``__aligned_u64`` so the offsets are the same on 32-bit ABIs.
"""

from __future__ import annotations

from collections import ChainMap

from vfiosim.uapi import vfio as _vfio
from vfiosim.uapi.ioctl import _IO
from vfiosim.uapi.vfio import (
    CONTAINER_IOCTLS,
    VFIO_BASE,
    VFIO_TYPE,
    Struct,
    Union,
    aligned_u64,
    name_map,
    u32,
)

#: SET_IOMMU / CHECK_EXTENSION id of the PAMU backend (SDK; = mainline VFIO_SPAPR_TCE_IOMMU).
VFIO_FSL_PAMU_IOMMU = 2

VFIO_IOMMU_PAMU_GET_ATTR = _IO(VFIO_TYPE, VFIO_BASE + 15)
VFIO_IOMMU_PAMU_SET_ATTR = _IO(VFIO_TYPE, VFIO_BASE + 16)
VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT = _IO(VFIO_TYPE, VFIO_BASE + 17)
VFIO_IOMMU_PAMU_MAP_MSI_BANK = _IO(VFIO_TYPE, VFIO_BASE + 18)
VFIO_IOMMU_PAMU_UNMAP_MSI_BANK = _IO(VFIO_TYPE, VFIO_BASE + 19)

# vfio_pamu_attr.attribute
VFIO_ATTR_GEOMETRY = 0
VFIO_ATTR_WINDOWS = 1
VFIO_ATTR_PAMU_STASH = 2

# Stash targets: enum pamu_stash_target (arch/powerpc/include/asm/fsl_pamu_stash.h).
PAMU_ATTR_CACHE_L1 = 1
PAMU_ATTR_CACHE_L2 = 2
PAMU_ATTR_CACHE_L3 = 3


class vfio_pamu_attr_geometry(Struct):
    """``attr_info.attr`` of ``struct vfio_pamu_attr`` (VFIO_ATTR_GEOMETRY).

    ::

        struct {
                /* first addr that can be mapped */
                __aligned_u64 aperture_start;
                /* last addr that can be mapped */
                __aligned_u64 aperture_end;
        } attr;

    ``aperture_end`` is inclusive.  The C struct is anonymous; the name is vfiosim's.
    """

    _fields_ = [
        ("aperture_start", aligned_u64),
        ("aperture_end", aligned_u64),
    ]


class vfio_pamu_attr_stash(Struct):
    """``attr_info.stash`` of ``struct vfio_pamu_attr`` (VFIO_ATTR_PAMU_STASH).

    ::

        struct {
                __u32 cpu;      /* CPU number for stashing */
                __u32 cache;    /* cache ID for stashing */
        } stash;
    """

    _fields_ = [
        ("cpu", u32),
        ("cache", u32),
    ]


class vfio_pamu_attr_info(Union):
    """The union ``attr_info`` of ``struct vfio_pamu_attr``: 16 bytes.

    ::

        union {
                struct { ... } attr;    /* VFIO_ATTR_GEOMETRY */
                __u32 windows;          /* VFIO_ATTR_WINDOWS */
                struct { ... } stash;   /* VFIO_ATTR_PAMU_STASH */
        } attr_info;

    The geometry member is called ``attr`` in the SDK header (``attr_info.attr.aperture_end``).
    """

    _fields_ = [
        ("attr", vfio_pamu_attr_geometry),
        ("windows", u32),
        ("stash", vfio_pamu_attr_stash),
    ]


class vfio_pamu_attr(Struct):
    """VFIO_IOMMU_PAMU_GET_ATTR / SET_ATTR argument: 32 bytes; minsz 32 (end of attr_info).

    ::

        struct vfio_pamu_attr {
                __u32   argsz;
                __u32   flags;  /* no flags currently */
        #define VFIO_ATTR_GEOMETRY      0
        #define VFIO_ATTR_WINDOWS       1
        #define VFIO_ATTR_PAMU_STASH    2
                __u32   attribute;
                union {
                        struct {
                                __aligned_u64 aperture_start;
                                __aligned_u64 aperture_end;
                        } attr;
                        __u32 windows;
                        struct {
                                __u32 cpu;
                                __u32 cache;
                        } stash;
                } attr_info;
        };

    C leaves 4 bytes of padding after ``attribute`` (named ``__pad`` here).
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("attribute", u32),
        ("__pad", u32),
        ("attr_info", vfio_pamu_attr_info),
    ]


class vfio_pamu_msi_bank_map(Struct):
    """VFIO_IOMMU_PAMU_MAP_MSI_BANK argument: 24 bytes; minsz 24 (end of iova).

    ::

        struct vfio_pamu_msi_bank_map {
                __u32   argsz;
                __u32   flags;          /* VFIO_DMA_MAP_FLAG_READ and/or _WRITE */
                __u32   msi_bank_index; /* the index of the MSI bank */
                __aligned_u64   iova;   /* the iova the bank is to be mapped to */
        };

    C leaves 4 bytes of padding after ``msi_bank_index`` (named ``__pad`` here).
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("msi_bank_index", u32),
        ("__pad", u32),
        ("iova", aligned_u64),
    ]


class vfio_pamu_msi_bank_unmap(Struct):
    """VFIO_IOMMU_PAMU_UNMAP_MSI_BANK argument: 16 bytes; minsz 16 (end of iova).

    ::

        struct vfio_pamu_msi_bank_unmap {
                __u32   argsz;
                __u32   flags;  /* no flags currently */
                __aligned_u64   iova;   /* the iova to be unmapped */
        };
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("iova", aligned_u64),
    ]


#: Ioctls a PAMU backend adds to its container (vfio_iommu_fsl_pamu.c).  GET_INFO is
#: served in auto mode (SPEC §6.8) and keeps its mainline name.
PAMU_IOCTLS: dict[int, str] = name_map(
    ChainMap(globals(), vars(_vfio)),
    [
        "VFIO_IOMMU_GET_INFO",
        "VFIO_IOMMU_MAP_DMA",
        "VFIO_IOMMU_UNMAP_DMA",
        "VFIO_IOMMU_PAMU_GET_ATTR",
        "VFIO_IOMMU_PAMU_SET_ATTR",
        "VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT",
        "VFIO_IOMMU_PAMU_MAP_MSI_BANK",
        "VFIO_IOMMU_PAMU_UNMAP_MSI_BANK",
    ],
)
assert not set(PAMU_IOCTLS) & set(CONTAINER_IOCTLS)
