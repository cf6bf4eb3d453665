"""include/uapi/linux/vfio.h: the ioctl numbers, structs and flags vfiosim serves or answers.

SPEC §3.  Every ioctl is ``_IO(VFIO_TYPE, VFIO_BASE + n)`` -- defined from the ``#define``,
not from the ``_IOR``/``_IOW`` in the comment above it (STYLE "One place per fact").  Sizes
travel in ``argsz``, never in the request number.

Layouts are those of the LP64 ABI (x86_64), little-endian (SPEC §3.4).  Each struct is one
ctypes class whose docstring quotes the C struct; where C leaves implicit padding the class
names it (``__pad``), and ``__aligned_u64`` is spelled out in the docstring.  On an LP64
host a ``c_uint64`` is 8-byte aligned, which is what ``__aligned_u64`` guarantees everywhere;
the module refuses to load on a host where that is not so, rather than produce wrong
layouts.

The same number means different ioctls on different files, and on a container it depends
on the backend chosen by SET_IOMMU (SPEC §3.2).  The name maps are therefore per file kind:
``CONTAINER_IOCTLS``, ``GROUP_IOCTLS``, ``DEVICE_IOCTLS``, ``TYPE1_IOCTLS``,
``SPAPR_IOCTLS``; ``IOCTL_NAMES`` maps a value to every mainline name it has, and
:func:`ioctl_name` picks the one that applies.

Names are the kernel's.  Definitions vfiosim adds are marked as such: ``offsetofend``,
the ``*_MINSZ`` sizes and the ``VFIO_PCI_OFFSET_*`` helpers (the last from
include/linux/vfio_pci_core.h, which is kernel-internal).
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

from vfiosim.uapi.ioctl import _IO

if ctypes.alignment(ctypes.c_uint64) != 8:  # pragma: no cover - LP64 hosts only
    raise ImportError("vfiosim.uapi needs an LP64 host: c_uint64 must be 8-byte aligned")

# ---------------------------------------------------------------------------------------------
# C types.  Plain names: a class body would mangle ``__u32``.

u8 = ctypes.c_uint8
u16 = ctypes.c_uint16
u32 = ctypes.c_uint32
s32 = ctypes.c_int32
u64 = ctypes.c_uint64
#: ``__aligned_u64`` (include/uapi/linux/types.h): 8-byte aligned on every ABI.  Identical to
#: ``u64`` on the LP64 hosts vfiosim runs on; kept apart so each field says what C says.
aligned_u64 = ctypes.c_uint64


def _repr(obj: ctypes.Structure | ctypes.Union) -> str:
    parts = []
    anonymous = getattr(obj, "_anonymous_", ())
    for name, *_ in obj._fields_:
        value = getattr(obj, name)
        if name in anonymous:
            parts.append(_repr(value)[len(type(value).__name__) + 1 : -1])
        elif isinstance(value, int):
            parts.append(f"{name}={value:#x}")
        elif not isinstance(value, ctypes.Array):  # flexible arrays have no content
            parts.append(f"{name}={value!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"


class Struct(ctypes.LittleEndianStructure):
    """Base of the uAPI structs: little-endian, natural alignment, a readable repr."""

    __repr__ = _repr


class Union(ctypes.LittleEndianUnion):
    """Base of the uAPI unions."""

    __repr__ = _repr


def _field(cls: type, name: str) -> tuple[Any, type]:
    """The ctypes descriptor and the type of field ``name`` of ``cls``.

    Looks through anonymous members as C does (``vfio_pci_dependent_device.group_id``).
    """
    for fname, ftype, *_ in cls._fields_:
        if fname == name:
            return getattr(cls, name), ftype
    for anon in getattr(cls, "_anonymous_", ()):
        inner = dict((f[0], f[1]) for f in cls._fields_)[anon]
        try:
            desc, ftype = _field(inner, name)
        except AttributeError:
            continue
        return _Shifted(getattr(cls, anon).offset + desc.offset, desc.size), ftype
    raise AttributeError(f"{cls.__name__} has no field {name!r}")


class _Shifted:
    __slots__ = ("offset", "size")

    def __init__(self, offset: int, size: int) -> None:
        self.offset = offset
        self.size = size


def offsetof(cls: type, field: str) -> int:
    """``offsetof(struct cls, field)``; ``field`` may be a dotted path (``attr_info.windows``)."""
    off = 0
    t = cls
    for part in field.split("."):
        desc, t = _field(t, part)
        off += desc.offset
    return off


def offsetofend(cls: type, field: str) -> int:
    """``offsetofend(struct cls, field)`` (include/linux/stddef.h): the first byte after it.

    The handlers' ``minsz``: ``offsetofend(vfio_group_status, 'flags')``, never a literal.
    """
    off = 0
    t = cls
    size = 0
    for part in field.split("."):
        desc, t = _field(t, part)
        off += desc.offset
        size = desc.size
    return off + size


def sizeof(obj: Any) -> int:
    """``sizeof``: ctypes.sizeof, here so that handlers read like the kernel."""
    return ctypes.sizeof(obj)


# ---------------------------------------------------------------------------------------------
# §3.1, §3.3: API version, extensions and IOMMU types

VFIO_API_VERSION = 0

VFIO_TYPE1_IOMMU = 1
VFIO_SPAPR_TCE_IOMMU = 2
VFIO_TYPE1v2_IOMMU = 3
VFIO_DMA_CC_IOMMU = 4
VFIO_EEH = 5
VFIO_TYPE1_NESTING_IOMMU = 6
VFIO_SPAPR_TCE_v2_IOMMU = 7
VFIO_NOIOMMU_IOMMU = 8
VFIO_UNMAP_ALL = 9
VFIO_UPDATE_VADDR = 10

VFIO_TYPE = ord(";")
VFIO_BASE = 100


class vfio_info_cap_header(Struct):
    """Header of every capability in an INFO capability chain.

    ::

        struct vfio_info_cap_header {
                __u16   id;             /* Identifies capability */
                __u16   version;        /* Version specific to the capability ID */
                __u32   next;           /* Offset of next capability */
        };

    ``next`` is relative to the start of the enclosing info struct; 0 ends the chain.
    """

    _fields_ = [
        ("id", u16),
        ("version", u16),
        ("next", u32),
    ]


# ---------------------------------------------------------------------------------------------
# Container (/dev/vfio/vfio)

VFIO_GET_API_VERSION = _IO(VFIO_TYPE, VFIO_BASE + 0)
VFIO_CHECK_EXTENSION = _IO(VFIO_TYPE, VFIO_BASE + 1)
VFIO_SET_IOMMU = _IO(VFIO_TYPE, VFIO_BASE + 2)

# ---------------------------------------------------------------------------------------------
# Group (/dev/vfio/$GROUP)

VFIO_GROUP_FLAGS_VIABLE = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1


class vfio_group_status(Struct):
    """VFIO_GROUP_GET_STATUS argument.

    ::

        struct vfio_group_status {
                __u32   argsz;
                __u32   flags;
        #define VFIO_GROUP_FLAGS_VIABLE         (1 << 0)
        #define VFIO_GROUP_FLAGS_CONTAINER_SET  (1 << 1)
        };
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
    ]


VFIO_GROUP_GET_STATUS = _IO(VFIO_TYPE, VFIO_BASE + 3)
VFIO_GROUP_SET_CONTAINER = _IO(VFIO_TYPE, VFIO_BASE + 4)
VFIO_GROUP_UNSET_CONTAINER = _IO(VFIO_TYPE, VFIO_BASE + 5)
VFIO_GROUP_GET_DEVICE_FD = _IO(VFIO_TYPE, VFIO_BASE + 6)

# ---------------------------------------------------------------------------------------------
# Device

VFIO_DEVICE_FLAGS_RESET = 1 << 0  # Device supports reset
VFIO_DEVICE_FLAGS_PCI = 1 << 1  # vfio-pci device
VFIO_DEVICE_FLAGS_PLATFORM = 1 << 2  # vfio-platform device
VFIO_DEVICE_FLAGS_AMBA = 1 << 3  # vfio-amba device
VFIO_DEVICE_FLAGS_CCW = 1 << 4  # vfio-ccw device
VFIO_DEVICE_FLAGS_AP = 1 << 5  # vfio-ap device
VFIO_DEVICE_FLAGS_FSL_MC = 1 << 6  # vfio-fsl-mc device
VFIO_DEVICE_FLAGS_CAPS = 1 << 7  # Info supports caps
VFIO_DEVICE_FLAGS_CDX = 1 << 8  # vfio-cdx device (6.4 and later headers)


class vfio_device_info(Struct):
    """VFIO_DEVICE_GET_INFO argument: 24 bytes (Linux 6.6 and later headers).

    ::

        struct vfio_device_info {
                __u32   argsz;
                __u32   flags;
        #define VFIO_DEVICE_FLAGS_RESET (1 << 0)        /* Device supports reset */
        #define VFIO_DEVICE_FLAGS_PCI   (1 << 1)        /* vfio-pci device */
        ...
        #define VFIO_DEVICE_FLAGS_CAPS  (1 << 7)        /* Info supports caps */
        #define VFIO_DEVICE_FLAGS_CDX   (1 << 8)        /* vfio-cdx device */
                __u32   num_regions;    /* Max region index + 1 */
                __u32   num_irqs;       /* Max IRQ index + 1 */
                __u32   cap_offset;     /* Offset within info struct of first cap */
                __u32   pad;
        };

    Headers before 6.6 end at ``cap_offset`` (20 bytes); SPEC §2.7 #13, #14.
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("num_regions", u32),
        ("num_irqs", u32),
        ("cap_offset", u32),
        ("pad", u32),
    ]


#: minsz of VFIO_DEVICE_GET_INFO: ``offsetofend(struct vfio_device_info, num_irqs)``
#: (vfio_pci_ioctl_get_info(), drivers/vfio/pci/vfio_pci_core.c).  vfiosim name.
VFIO_DEVICE_INFO_MINSZ = offsetofend(vfio_device_info, "num_irqs")
#: ``sizeof(struct vfio_device_info)`` in headers before 6.6 (SPEC §2.7 #14).  vfiosim name.
VFIO_DEVICE_INFO_SIZE_PRE_6_6 = offsetofend(vfio_device_info, "cap_offset")

VFIO_DEVICE_GET_INFO = _IO(VFIO_TYPE, VFIO_BASE + 7)

VFIO_DEVICE_API_PCI_STRING = "vfio-pci"

VFIO_REGION_INFO_FLAG_READ = 1 << 0  # Region supports read
VFIO_REGION_INFO_FLAG_WRITE = 1 << 1  # Region supports write
VFIO_REGION_INFO_FLAG_MMAP = 1 << 2  # Region supports mmap
VFIO_REGION_INFO_FLAG_CAPS = 1 << 3  # Info supports caps


class vfio_region_info(Struct):
    """VFIO_DEVICE_GET_REGION_INFO argument.

    ::

        struct vfio_region_info {
                __u32   argsz;
                __u32   flags;
        #define VFIO_REGION_INFO_FLAG_READ      (1 << 0) /* Region supports read */
        #define VFIO_REGION_INFO_FLAG_WRITE     (1 << 1) /* Region supports write */
        #define VFIO_REGION_INFO_FLAG_MMAP      (1 << 2) /* Region supports mmap */
        #define VFIO_REGION_INFO_FLAG_CAPS      (1 << 3) /* Info supports caps */
                __u32   index;          /* Region index */
                __u32   cap_offset;     /* Offset within info struct of first cap */
                __aligned_u64   size;   /* Region size (bytes) */
                __aligned_u64   offset; /* Region offset from start of device fd */
        };

    ``cap_offset`` was ``resv`` in the 2013 headers.
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("index", u32),
        ("cap_offset", u32),
        ("size", aligned_u64),
        ("offset", aligned_u64),
    ]


VFIO_DEVICE_GET_REGION_INFO = _IO(VFIO_TYPE, VFIO_BASE + 8)

# Region info capability ids (the chain of VFIO_DEVICE_GET_REGION_INFO).
VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1
VFIO_REGION_INFO_CAP_TYPE = 2
VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3


class vfio_region_sparse_mmap_area(Struct):
    """One mmap-able area of a region.

    ::

        struct vfio_region_sparse_mmap_area {
                __aligned_u64   offset; /* Offset of mmap'able area within region */
                __aligned_u64   size;   /* Size of mmap'able area */
        };
    """

    _fields_ = [
        ("offset", aligned_u64),
        ("size", aligned_u64),
    ]


class vfio_region_info_cap_sparse_mmap(Struct):
    """Capability VFIO_REGION_INFO_CAP_SPARSE_MMAP, version 1: 16 bytes + areas.

    ::

        struct vfio_region_info_cap_sparse_mmap {
                struct vfio_info_cap_header header;
                __u32   nr_areas;
                __u32   reserved;
                struct vfio_region_sparse_mmap_area areas[];
        };
    """

    _fields_ = [
        ("header", vfio_info_cap_header),
        ("nr_areas", u32),
        ("reserved", u32),
        ("areas", vfio_region_sparse_mmap_area * 0),
    ]


class vfio_region_info_cap_type(Struct):
    """Capability VFIO_REGION_INFO_CAP_TYPE, version 1.

    ::

        struct vfio_region_info_cap_type {
                struct vfio_info_cap_header header;
                __u32 type;     /* global per bus driver */
                __u32 subtype;  /* type specific */
        };
    """

    _fields_ = [
        ("header", vfio_info_cap_header),
        ("type", u32),
        ("subtype", u32),
    ]


VFIO_IRQ_INFO_EVENTFD = 1 << 0
VFIO_IRQ_INFO_MASKABLE = 1 << 1
VFIO_IRQ_INFO_AUTOMASKED = 1 << 2
VFIO_IRQ_INFO_NORESIZE = 1 << 3


class vfio_irq_info(Struct):
    """VFIO_DEVICE_GET_IRQ_INFO argument.

    ::

        struct vfio_irq_info {
                __u32   argsz;
                __u32   flags;
        #define VFIO_IRQ_INFO_EVENTFD           (1 << 0)
        #define VFIO_IRQ_INFO_MASKABLE          (1 << 1)
        #define VFIO_IRQ_INFO_AUTOMASKED        (1 << 2)
        #define VFIO_IRQ_INFO_NORESIZE          (1 << 3)
                __u32   index;          /* IRQ index */
                __u32   count;          /* Number of IRQs within this index */
        };
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("index", u32),
        ("count", u32),
    ]


VFIO_DEVICE_GET_IRQ_INFO = _IO(VFIO_TYPE, VFIO_BASE + 9)

VFIO_IRQ_SET_DATA_NONE = 1 << 0  # Data not present
VFIO_IRQ_SET_DATA_BOOL = 1 << 1  # Data is bool (u8)
VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2  # Data is eventfd (s32)
VFIO_IRQ_SET_ACTION_MASK = 1 << 3  # Mask interrupt
VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4  # Unmask interrupt
VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5  # Trigger interrupt

VFIO_IRQ_SET_DATA_TYPE_MASK = (
    VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD
)
VFIO_IRQ_SET_ACTION_TYPE_MASK = (
    VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER
)


class vfio_irq_set(Struct):
    """VFIO_DEVICE_SET_IRQS argument: a 20-byte header followed by ``data[]``.

    ::

        struct vfio_irq_set {
                __u32   argsz;
                __u32   flags;
        #define VFIO_IRQ_SET_DATA_NONE          (1 << 0) /* Data not present */
        #define VFIO_IRQ_SET_DATA_BOOL          (1 << 1) /* Data is bool (u8) */
        #define VFIO_IRQ_SET_DATA_EVENTFD       (1 << 2) /* Data is eventfd (s32) */
        #define VFIO_IRQ_SET_ACTION_MASK        (1 << 3) /* Mask interrupt */
        #define VFIO_IRQ_SET_ACTION_UNMASK      (1 << 4) /* Unmask interrupt */
        #define VFIO_IRQ_SET_ACTION_TRIGGER     (1 << 5) /* Trigger interrupt */
                __u32   index;
                __u32   start;
                __u32   count;
                __u8    data[];
        };

    ``data[]`` is ``count`` u8 (DATA_BOOL) or ``count`` s32 eventfds (DATA_EVENTFD).
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("index", u32),
        ("start", u32),
        ("count", u32),
        ("data", u8 * 0),
    ]


VFIO_DEVICE_SET_IRQS = _IO(VFIO_TYPE, VFIO_BASE + 10)
VFIO_DEVICE_RESET = _IO(VFIO_TYPE, VFIO_BASE + 11)

# vfio-pci fixed region and IRQ indexes (anonymous enums in vfio.h).
VFIO_PCI_BAR0_REGION_INDEX = 0
VFIO_PCI_BAR1_REGION_INDEX = 1
VFIO_PCI_BAR2_REGION_INDEX = 2
VFIO_PCI_BAR3_REGION_INDEX = 3
VFIO_PCI_BAR4_REGION_INDEX = 4
VFIO_PCI_BAR5_REGION_INDEX = 5
VFIO_PCI_ROM_REGION_INDEX = 6
VFIO_PCI_CONFIG_REGION_INDEX = 7
VFIO_PCI_VGA_REGION_INDEX = 8
VFIO_PCI_NUM_REGIONS = 9  # Fixed user ABI, region indexes >=9 use device specific caps

VFIO_PCI_INTX_IRQ_INDEX = 0
VFIO_PCI_MSI_IRQ_INDEX = 1
VFIO_PCI_MSIX_IRQ_INDEX = 2
VFIO_PCI_ERR_IRQ_INDEX = 3
VFIO_PCI_REQ_IRQ_INDEX = 4
VFIO_PCI_NUM_IRQS = 5

# include/linux/vfio_pci_core.h (kernel-internal, but the file offsets are user ABI: region i
# is at device-fd offset i << 40; SPEC §3.5).
VFIO_PCI_OFFSET_SHIFT = 40
VFIO_PCI_OFFSET_MASK = (1 << VFIO_PCI_OFFSET_SHIFT) - 1


def VFIO_PCI_OFFSET_TO_INDEX(off: int) -> int:
    """``VFIO_PCI_OFFSET_TO_INDEX(off)``: the region a device-fd offset falls in."""
    return off >> VFIO_PCI_OFFSET_SHIFT


def VFIO_PCI_INDEX_TO_OFFSET(index: int) -> int:
    """``VFIO_PCI_INDEX_TO_OFFSET(index)``: the device-fd offset of region ``index``."""
    return index << VFIO_PCI_OFFSET_SHIFT


# Hot reset (device fd, numbers 12 and 13 -- the same as GET_INFO and MAP_DMA on a container).

VFIO_PCI_DEVID_OWNED = 0
VFIO_PCI_DEVID_NOT_OWNED = -1

VFIO_PCI_HOT_RESET_FLAG_DEV_ID = 1 << 0
VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED = 1 << 1


class _vfio_pci_dependent_device_id(Union):
    """The anonymous union at the start of vfio_pci_dependent_device (mainline headers)."""

    _fields_ = [
        ("group_id", u32),
        ("devid", u32),
    ]


class vfio_pci_dependent_device(Struct):
    """One device affected by a hot reset: 8 bytes.

    ::

        struct vfio_pci_dependent_device {
                union {
                        __u32   group_id;
                        __u32   devid;
        #define VFIO_PCI_DEVID_OWNED            0
        #define VFIO_PCI_DEVID_NOT_OWNED        -1
                };
                __u16   segment;
                __u8    bus;
                __u8    devfn; /* Use PCI_SLOT/PCI_FUNC */
        };

    Older headers (6.1, installed on the build host) have a plain ``__u32 group_id``; the
    layout is the same.
    """

    _anonymous_ = ("_id",)
    _fields_ = [
        ("_id", _vfio_pci_dependent_device_id),
        ("segment", u16),
        ("bus", u8),
        ("devfn", u8),
    ]


class vfio_pci_hot_reset_info(Struct):
    """VFIO_DEVICE_GET_PCI_HOT_RESET_INFO argument: a 12-byte header followed by ``devices[]``.

    ::

        struct vfio_pci_hot_reset_info {
                __u32   argsz;
                __u32   flags;
        #define VFIO_PCI_HOT_RESET_FLAG_DEV_ID          (1 << 0)
        #define VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED    (1 << 1)
                __u32   count;
                struct vfio_pci_dependent_device        devices[];
        };
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("count", u32),
        ("devices", vfio_pci_dependent_device * 0),
    ]


VFIO_DEVICE_GET_PCI_HOT_RESET_INFO = _IO(VFIO_TYPE, VFIO_BASE + 12)


class vfio_pci_hot_reset(Struct):
    """VFIO_DEVICE_PCI_HOT_RESET argument: a 12-byte header followed by ``group_fds[]``.

    ::

        struct vfio_pci_hot_reset {
                __u32   argsz;
                __u32   flags;
                __u32   count;
                __s32   group_fds[];
        };
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("count", u32),
        ("group_fds", s32 * 0),
    ]


VFIO_DEVICE_PCI_HOT_RESET = _IO(VFIO_TYPE, VFIO_BASE + 13)

# Device ioctls vfiosim answers with ENOTTY (SPEC §3.2, decision D16); numbers for traces.
VFIO_DEVICE_QUERY_GFX_PLANE = _IO(VFIO_TYPE, VFIO_BASE + 14)
VFIO_DEVICE_GET_GFX_DMABUF = _IO(VFIO_TYPE, VFIO_BASE + 15)

VFIO_DEVICE_IOEVENTFD_8 = 1 << 0  # 1-byte write
VFIO_DEVICE_IOEVENTFD_16 = 1 << 1  # 2-byte write
VFIO_DEVICE_IOEVENTFD_32 = 1 << 2  # 4-byte write
VFIO_DEVICE_IOEVENTFD_64 = 1 << 3  # 8-byte write
VFIO_DEVICE_IOEVENTFD_SIZE_MASK = 0xF


class vfio_device_ioeventfd(Struct):
    """VFIO_DEVICE_IOEVENTFD argument (not modelled: ENOTTY, SPEC Appendix B).

    ::

        struct vfio_device_ioeventfd {
                __u32   argsz;
                __u32   flags;
        #define VFIO_DEVICE_IOEVENTFD_8         (1 << 0) /* 1-byte write */
        #define VFIO_DEVICE_IOEVENTFD_16        (1 << 1) /* 2-byte write */
        #define VFIO_DEVICE_IOEVENTFD_32        (1 << 2) /* 4-byte write */
        #define VFIO_DEVICE_IOEVENTFD_64        (1 << 3) /* 8-byte write */
        #define VFIO_DEVICE_IOEVENTFD_SIZE_MASK (0xf)
                __aligned_u64   offset;         /* device fd offset of write */
                __aligned_u64   data;           /* data to be written */
                __s32   fd;                     /* -1 for de-assignment */
                __u32   reserved;       /* mainline; tail padding in 6.1 headers */
        };
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("offset", aligned_u64),
        ("data", aligned_u64),
        ("fd", s32),
        ("reserved", u32),
    ]


VFIO_DEVICE_IOEVENTFD = _IO(VFIO_TYPE, VFIO_BASE + 16)

VFIO_DEVICE_FEATURE_MASK = 0xFFFF  # 16-bit feature index
VFIO_DEVICE_FEATURE_GET = 1 << 16  # Get feature into data[]
VFIO_DEVICE_FEATURE_SET = 1 << 17  # Set feature from data[]
VFIO_DEVICE_FEATURE_PROBE = 1 << 18  # Probe feature support


class vfio_device_feature(Struct):
    """VFIO_DEVICE_FEATURE argument (vfio_ioctl_device_feature(), kernel/vfio_main.py).

    ::

        struct vfio_device_feature {
                __u32   argsz;
                __u32   flags;
        #define VFIO_DEVICE_FEATURE_MASK        (0xffff) /* 16-bit feature index */
        #define VFIO_DEVICE_FEATURE_GET         (1 << 16) /* Get feature into data[] */
        #define VFIO_DEVICE_FEATURE_SET         (1 << 17) /* Set feature from data[] */
        #define VFIO_DEVICE_FEATURE_PROBE       (1 << 18) /* Probe feature support */
                __u8    data[];
        };
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("data", u8 * 0),
    ]


VFIO_DEVICE_FEATURE = _IO(VFIO_TYPE, VFIO_BASE + 17)

# Feature indexes (the low 16 bits of vfio_device_feature.flags).
VFIO_DEVICE_FEATURE_PCI_VF_TOKEN = 0
VFIO_DEVICE_FEATURE_MIGRATION = 1
VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE = 2
VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY = 3
VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP = 4
VFIO_DEVICE_FEATURE_LOW_POWER_EXIT = 5
VFIO_DEVICE_FEATURE_DMA_LOGGING_START = 6
VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP = 7
VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT = 8
VFIO_DEVICE_FEATURE_MIG_DATA_SIZE = 9
VFIO_DEVICE_FEATURE_BUS_MASTER = 10


class vfio_device_low_power_entry_with_wakeup(Struct):
    """data[] of VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP.

    ::

        struct vfio_device_low_power_entry_with_wakeup {
                __s32 wakeup_eventfd;
                __u32 reserved;
        };
    """

    _fields_ = [
        ("wakeup_eventfd", s32),
        ("reserved", u32),
    ]

# iommufd cdev ioctls on a device fd (6.6 and later); not modelled (SPEC Appendix B).
VFIO_DEVICE_BIND_IOMMUFD = _IO(VFIO_TYPE, VFIO_BASE + 18)
VFIO_DEVICE_ATTACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 19)
VFIO_DEVICE_DETACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 20)

# ---------------------------------------------------------------------------------------------
# Type1 IOMMU (container, after SET_IOMMU(VFIO_TYPE1_IOMMU / VFIO_TYPE1v2_IOMMU))

VFIO_IOMMU_INFO_PGSIZES = 1 << 0  # supported page sizes info
VFIO_IOMMU_INFO_CAPS = 1 << 1  # Info supports caps


class vfio_iommu_type1_info(Struct):
    """VFIO_IOMMU_GET_INFO argument: 24 bytes.

    ::

        struct vfio_iommu_type1_info {
                __u32   argsz;
                __u32   flags;
        #define VFIO_IOMMU_INFO_PGSIZES (1 << 0)        /* supported page sizes info */
        #define VFIO_IOMMU_INFO_CAPS    (1 << 1)        /* Info supports caps */
                __aligned_u64   iova_pgsizes;   /* Bitmap of supported page sizes */
                __u32   cap_offset;     /* Offset within info struct of first cap */
                __u32   pad;
        };

    Headers before 6.6 have no ``pad``: the same 4 bytes are tail padding (SPEC §2.7 #14).
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("iova_pgsizes", aligned_u64),
        ("cap_offset", u32),
        ("pad", u32),
    ]


#: minsz of Type1 GET_INFO: ``offsetofend(struct vfio_iommu_type1_info, iova_pgsizes)``
#: (vfio_iommu_type1_get_info(), drivers/vfio/vfio_iommu_type1.c).  vfiosim name.
VFIO_IOMMU_TYPE1_INFO_MINSZ = offsetofend(vfio_iommu_type1_info, "iova_pgsizes")
#: The fixed part written back before 6.6 when argsz allows: up to ``cap_offset`` (§2.7 #12).
VFIO_IOMMU_TYPE1_INFO_SIZE_PRE_6_6 = offsetofend(vfio_iommu_type1_info, "cap_offset")

# Type1 GET_INFO capability ids.
VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1
VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2
VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3  # sic: no _CAP_ in the kernel's name


class vfio_iova_range(Struct):
    """One valid IOVA range, inclusive at both ends.

    ::

        struct vfio_iova_range {
                __u64   start;
                __u64   end;
        };
    """

    _fields_ = [
        ("start", u64),
        ("end", u64),
    ]


class vfio_iommu_type1_info_cap_iova_range(Struct):
    """Capability VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, version 1: 16 bytes + ranges.

    ::

        struct vfio_iommu_type1_info_cap_iova_range {
                struct  vfio_info_cap_header header;
                __u32   nr_iovas;
                __u32   reserved;
                struct  vfio_iova_range iova_ranges[];
        };
    """

    _fields_ = [
        ("header", vfio_info_cap_header),
        ("nr_iovas", u32),
        ("reserved", u32),
        ("iova_ranges", vfio_iova_range * 0),
    ]


class vfio_iommu_type1_info_cap_migration(Struct):
    """Capability VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, version 1: 32 bytes.

    ::

        struct vfio_iommu_type1_info_cap_migration {
                struct  vfio_info_cap_header header;
                __u32   flags;
                __u64   pgsize_bitmap;
                __u64   max_dirty_bitmap_size;          /* in bytes */
        };

    C leaves 4 bytes of padding after ``flags`` (named ``__pad`` here).
    """

    _fields_ = [
        ("header", vfio_info_cap_header),
        ("flags", u32),
        ("__pad", u32),
        ("pgsize_bitmap", u64),
        ("max_dirty_bitmap_size", u64),
    ]


class vfio_iommu_type1_info_dma_avail(Struct):
    """Capability VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, version 1: 12 bytes.

    ::

        struct vfio_iommu_type1_info_dma_avail {
                struct  vfio_info_cap_header header;
                __u32   avail;
        };
    """

    _fields_ = [
        ("header", vfio_info_cap_header),
        ("avail", u32),
    ]


VFIO_IOMMU_GET_INFO = _IO(VFIO_TYPE, VFIO_BASE + 12)

VFIO_DMA_MAP_FLAG_READ = 1 << 0  # readable from device
VFIO_DMA_MAP_FLAG_WRITE = 1 << 1  # writable from device
VFIO_DMA_MAP_FLAG_VADDR = 1 << 2


class vfio_iommu_type1_dma_map(Struct):
    """VFIO_IOMMU_MAP_DMA argument: 32 bytes.

    ::

        struct vfio_iommu_type1_dma_map {
                __u32   argsz;
                __u32   flags;
        #define VFIO_DMA_MAP_FLAG_READ (1 << 0)         /* readable from device */
        #define VFIO_DMA_MAP_FLAG_WRITE (1 << 1)        /* writable from device */
        #define VFIO_DMA_MAP_FLAG_VADDR (1 << 2)
                __u64   vaddr;                          /* Process virtual address */
                __u64   iova;                           /* IO virtual address */
                __u64   size;                           /* Size of mapping (bytes) */
        };
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("vaddr", u64),
        ("iova", u64),
        ("size", u64),
    ]


VFIO_IOMMU_MAP_DMA = _IO(VFIO_TYPE, VFIO_BASE + 13)


class vfio_bitmap(Struct):
    """A user dirty bitmap: 24 bytes.

    ::

        struct vfio_bitmap {
                __u64        pgsize;    /* page size for bitmap in bytes */
                __u64        size;      /* in bytes */
                __u64 __user *data;     /* one bit per page */
        };

    ``data`` is a pointer in C: 8 bytes on LP64 (the only ABI modelled), an address here.
    """

    _fields_ = [
        ("pgsize", u64),
        ("size", u64),
        ("data", u64),
    ]


VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0
VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1
VFIO_DMA_UNMAP_FLAG_VADDR = 1 << 2


class vfio_iommu_type1_dma_unmap(Struct):
    """VFIO_IOMMU_UNMAP_DMA argument: a 24-byte header followed by ``data[]``.

    ::

        struct vfio_iommu_type1_dma_unmap {
                __u32   argsz;
                __u32   flags;
        #define VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP (1 << 0)
        #define VFIO_DMA_UNMAP_FLAG_ALL              (1 << 1)
        #define VFIO_DMA_UNMAP_FLAG_VADDR            (1 << 2)
                __u64   iova;                           /* IO virtual address */
                __u64   size;                           /* Size of mapping (bytes) */
                __u8    data[];
        };

    With GET_DIRTY_BITMAP, ``data[]`` holds a ``struct vfio_bitmap``.
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("iova", u64),
        ("size", u64),
        ("data", u8 * 0),
    ]


VFIO_IOMMU_UNMAP_DMA = _IO(VFIO_TYPE, VFIO_BASE + 14)

# sPAPR: enable/disable container usage (no parameters).  The PAMU numbers collide.
VFIO_IOMMU_ENABLE = _IO(VFIO_TYPE, VFIO_BASE + 15)
VFIO_IOMMU_DISABLE = _IO(VFIO_TYPE, VFIO_BASE + 16)

VFIO_IOMMU_DIRTY_PAGES_FLAG_START = 1 << 0
VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP = 1 << 1
VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP = 1 << 2


class vfio_iommu_type1_dirty_bitmap(Struct):
    """VFIO_IOMMU_DIRTY_PAGES argument: an 8-byte header followed by ``data[]``.

    ::

        struct vfio_iommu_type1_dirty_bitmap {
                __u32        argsz;
                __u32        flags;
        #define VFIO_IOMMU_DIRTY_PAGES_FLAG_START       (1 << 0)
        #define VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP        (1 << 1)
        #define VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP  (1 << 2)
                __u8         data[];
        };

    With GET_BITMAP, ``data[]`` holds a ``struct vfio_iommu_type1_dirty_bitmap_get``.
    """

    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("data", u8 * 0),
    ]


class vfio_iommu_type1_dirty_bitmap_get(Struct):
    """The GET_BITMAP range: 40 bytes.

    ::

        struct vfio_iommu_type1_dirty_bitmap_get {
                __u64              iova;        /* IO virtual address */
                __u64              size;        /* Size of iova range */
                struct vfio_bitmap bitmap;
        };
    """

    _fields_ = [
        ("iova", u64),
        ("size", u64),
        ("bitmap", vfio_bitmap),
    ]


VFIO_IOMMU_DIRTY_PAGES = _IO(VFIO_TYPE, VFIO_BASE + 17)

# ---------------------------------------------------------------------------------------------
# sPAPR TCE IOMMU: numbers only, so that traces can name them (no preset has sPAPR; §3.2).

VFIO_IOMMU_SPAPR_TCE_GET_INFO = _IO(VFIO_TYPE, VFIO_BASE + 12)
VFIO_IOMMU_SPAPR_REGISTER_MEMORY = _IO(VFIO_TYPE, VFIO_BASE + 17)
VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY = _IO(VFIO_TYPE, VFIO_BASE + 18)
VFIO_IOMMU_SPAPR_TCE_CREATE = _IO(VFIO_TYPE, VFIO_BASE + 19)
VFIO_IOMMU_SPAPR_TCE_REMOVE = _IO(VFIO_TYPE, VFIO_BASE + 20)
VFIO_EEH_PE_OP = _IO(VFIO_TYPE, VFIO_BASE + 21)

# ---------------------------------------------------------------------------------------------
# Name maps (pyroute2 map_namespace style), built once.


def name_map(ns: Mapping[str, object], names: list[str]) -> dict[int, str]:
    """value -> name for ``names`` looked up in ``ns``; a value may appear once per map."""
    out: dict[int, str] = {}
    for name in names:
        value = ns[name]
        assert isinstance(value, int)
        if value in out:
            raise ValueError(f"{name} and {out[value]} share {value:#x} in one map")
        out[value] = name
    return out


#: Ioctls of every container, before and after SET_IOMMU (container.c).
CONTAINER_IOCTLS: dict[int, str] = name_map(
    globals(), ["VFIO_GET_API_VERSION", "VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU"]
)
#: Ioctls a Type1 backend adds to its container (vfio_iommu_type1.c).
TYPE1_IOCTLS: dict[int, str] = name_map(
    globals(),
    [
        "VFIO_IOMMU_GET_INFO",
        "VFIO_IOMMU_MAP_DMA",
        "VFIO_IOMMU_UNMAP_DMA",
        "VFIO_IOMMU_DIRTY_PAGES",
    ],
)
#: Ioctls an sPAPR TCE backend adds (vfio_iommu_spapr_tce.c); for naming only.
SPAPR_IOCTLS: dict[int, str] = name_map(
    globals(),
    [
        "VFIO_IOMMU_SPAPR_TCE_GET_INFO",
        "VFIO_IOMMU_MAP_DMA",
        "VFIO_IOMMU_UNMAP_DMA",
        "VFIO_IOMMU_ENABLE",
        "VFIO_IOMMU_DISABLE",
        "VFIO_IOMMU_SPAPR_REGISTER_MEMORY",
        "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY",
        "VFIO_IOMMU_SPAPR_TCE_CREATE",
        "VFIO_IOMMU_SPAPR_TCE_REMOVE",
        "VFIO_EEH_PE_OP",
    ],
)
#: Ioctls of a group fd (group.c).
GROUP_IOCTLS: dict[int, str] = name_map(
    globals(),
    [
        "VFIO_GROUP_GET_STATUS",
        "VFIO_GROUP_SET_CONTAINER",
        "VFIO_GROUP_UNSET_CONTAINER",
        "VFIO_GROUP_GET_DEVICE_FD",
    ],
)
#: Ioctls of a device fd (vfio_main.c, vfio_pci_core.c).
DEVICE_IOCTLS: dict[int, str] = name_map(
    globals(),
    [
        "VFIO_DEVICE_GET_INFO",
        "VFIO_DEVICE_GET_REGION_INFO",
        "VFIO_DEVICE_GET_IRQ_INFO",
        "VFIO_DEVICE_SET_IRQS",
        "VFIO_DEVICE_RESET",
        "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO",
        "VFIO_DEVICE_PCI_HOT_RESET",
        "VFIO_DEVICE_QUERY_GFX_PLANE",
        "VFIO_DEVICE_GET_GFX_DMABUF",
        "VFIO_DEVICE_IOEVENTFD",
        "VFIO_DEVICE_FEATURE",
        "VFIO_DEVICE_BIND_IOMMUFD",
        "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
        "VFIO_DEVICE_DETACH_IOMMUFD_PT",
    ],
)


def _all_names(*maps: dict[int, str]) -> dict[int, tuple[str, ...]]:
    out: dict[int, list[str]] = {}
    for m in maps:
        for value, name in m.items():
            names = out.setdefault(value, [])
            if name not in names:
                names.append(name)
    return {v: tuple(n) for v, n in sorted(out.items())}


#: value -> every mainline name the number has, on any file (SPEC §3.2 collisions).
#: The PAMU names are in :data:`vfiosim.uapi.vfio_pamu.PAMU_IOCTLS`.
IOCTL_NAMES: dict[int, tuple[str, ...]] = _all_names(
    CONTAINER_IOCTLS, GROUP_IOCTLS, DEVICE_IOCTLS, TYPE1_IOCTLS, SPAPR_IOCTLS
)

#: Extension / IOMMU type id -> mainline name (SPEC §3.3).
EXTENSION_NAMES: dict[int, str] = {
    value: name
    for name, value in list(globals().items())
    if name
    in (
        "VFIO_TYPE1_IOMMU",
        "VFIO_SPAPR_TCE_IOMMU",
        "VFIO_TYPE1v2_IOMMU",
        "VFIO_DMA_CC_IOMMU",
        "VFIO_EEH",
        "VFIO_TYPE1_NESTING_IOMMU",
        "VFIO_SPAPR_TCE_v2_IOMMU",
        "VFIO_NOIOMMU_IOMMU",
        "VFIO_UNMAP_ALL",
        "VFIO_UPDATE_VADDR",
    )
}

_BACKEND_IOCTLS: dict[str, dict[int, str]] = {"type1": TYPE1_IOCTLS, "spapr": SPAPR_IOCTLS}


def ioctl_name(request: int, kind: str, iommu: str | None = None) -> str:
    """The name of ``request`` on a file of ``kind`` ("container" | "group" | "device").

    ``iommu`` is the container's backend ("type1", "fsl_pamu", "spapr"; None before
    SET_IOMMU).  Unknown numbers come back as hex, e.g. ``"0x3b80"``.
    """
    if kind == "container":
        if request in CONTAINER_IOCTLS:
            return CONTAINER_IOCTLS[request]
        if iommu == "fsl_pamu":
            from vfiosim.uapi.vfio_pamu import PAMU_IOCTLS

            table = PAMU_IOCTLS
        else:
            table = _BACKEND_IOCTLS.get(iommu or "", {})
    elif kind == "group":
        table = GROUP_IOCTLS
    elif kind == "device":
        table = DEVICE_IOCTLS
    else:
        raise ValueError(f"unknown file kind {kind!r}")
    return table.get(request, f"{request:#x}")
