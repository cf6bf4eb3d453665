"""include/uapi/linux/pci_regs.h: the subset the device models and vfio-pci use.

PCI Local Bus Spec 3.0, 6.1 (configuration header), 6.7 (capabilities list), 6.8.1 (MSI),
6.8.2 (MSI-X); PCI Bus Power Management Interface Spec 1.2, 3.2; PCI Express Base Spec,
7.5.3 (PCI Express Capability Structure).  Offsets are bytes from the start of config space
(header) or from the start of the capability (capability registers).  Names and values are
the kernel's; the one addition is :class:`PciCapId` (cocotbext-pcie style).

Masks written ``(~0x0fUL)`` in C are written ``~0x0F`` here: used with ``&`` they clear the
same bits of a value of any width.
"""

from __future__ import annotations

from enum import IntEnum

PCI_CFG_SPACE_SIZE = 256
PCI_CFG_SPACE_EXP_SIZE = 4096

# ---------------------------------------------------------------------------------------------
# Type 0 configuration header
#
#     dword  byte   31            24 23            16 15             8 7              0
#       0    0x00  |           Device ID            |           Vendor ID            |
#       1    0x04  |             Status             |            Command             |
#       2    0x08  |                  Class Code                     |  Revision ID   |
#       3    0x0c  |      BIST      |  Header Type   | Latency Timer  |Cache Line Size |
#     4-9    0x10  |                  Base Address Registers 0..5                      |
#      10    0x28  |                      CardBus CIS Pointer                          |
#      11    0x2c  |          Subsystem ID          |      Subsystem Vendor ID       |
#      12    0x30  |                 Expansion ROM Base Address                        |
#      13    0x34  |                    Reserved                      |  Cap. Pointer  |
#      14    0x38  |                            Reserved                               |
#      15    0x3c  |    Max_Lat     |    Min_Gnt     | Interrupt Pin  | Interrupt Line |

PCI_STD_HEADER_SIZEOF = 64
PCI_STD_NUM_BARS = 6  # Number of standard BARs

PCI_VENDOR_ID = 0x00  # 16 bits
PCI_DEVICE_ID = 0x02  # 16 bits
PCI_COMMAND = 0x04  # 16 bits
PCI_COMMAND_IO = 0x1  # Enable response in I/O space
PCI_COMMAND_MEMORY = 0x2  # Enable response in Memory space
PCI_COMMAND_MASTER = 0x4  # Enable bus mastering
PCI_COMMAND_SPECIAL = 0x8  # Enable response to special cycles
PCI_COMMAND_INVALIDATE = 0x10  # Use memory write and invalidate
PCI_COMMAND_VGA_PALETTE = 0x20  # Enable palette snooping
PCI_COMMAND_PARITY = 0x40  # Enable parity checking
PCI_COMMAND_WAIT = 0x80  # Enable address/data stepping
PCI_COMMAND_SERR = 0x100  # Enable SERR
PCI_COMMAND_FAST_BACK = 0x200  # Enable back-to-back writes
PCI_COMMAND_INTX_DISABLE = 0x400  # INTx Emulation Disable

PCI_STATUS = 0x06  # 16 bits
PCI_STATUS_IMM_READY = 0x01  # Immediate Readiness
PCI_STATUS_INTERRUPT = 0x08  # Interrupt status
PCI_STATUS_CAP_LIST = 0x10  # Support Capability List
PCI_STATUS_66MHZ = 0x20  # Support 66 MHz PCI 2.1 bus
PCI_STATUS_FAST_BACK = 0x80  # Accept fast-back to back
PCI_STATUS_PARITY = 0x100  # Detected parity error
PCI_STATUS_DEVSEL_MASK = 0x600  # DEVSEL timing
PCI_STATUS_SIG_TARGET_ABORT = 0x800  # Set on target abort
PCI_STATUS_REC_TARGET_ABORT = 0x1000  # Master ack of target abort
PCI_STATUS_REC_MASTER_ABORT = 0x2000  # Set on master abort
PCI_STATUS_SIG_SYSTEM_ERROR = 0x4000  # Set when we drive SERR
PCI_STATUS_DETECTED_PARITY = 0x8000  # Set on parity error

PCI_CLASS_REVISION = 0x08  # High 24 bits are class, low 8 revision
PCI_REVISION_ID = 0x08  # Revision ID
PCI_CLASS_PROG = 0x09  # Reg. Level Programming Interface
PCI_CLASS_DEVICE = 0x0A  # Device class

PCI_CACHE_LINE_SIZE = 0x0C  # 8 bits
PCI_LATENCY_TIMER = 0x0D  # 8 bits
PCI_HEADER_TYPE = 0x0E  # 8 bits
PCI_HEADER_TYPE_MASK = 0x7F
PCI_HEADER_TYPE_NORMAL = 0

PCI_BIST = 0x0F  # 8 bits
PCI_BIST_CODE_MASK = 0x0F  # Return result
PCI_BIST_START = 0x40  # 1 to start BIST, 2 secs or less
PCI_BIST_CAPABLE = 0x80  # 1 if BIST capable

PCI_BASE_ADDRESS_0 = 0x10  # 32 bits
PCI_BASE_ADDRESS_1 = 0x14  # 32 bits [htype 0,1 only]
PCI_BASE_ADDRESS_2 = 0x18  # 32 bits [htype 0 only]
PCI_BASE_ADDRESS_3 = 0x1C  # 32 bits
PCI_BASE_ADDRESS_4 = 0x20  # 32 bits
PCI_BASE_ADDRESS_5 = 0x24  # 32 bits
PCI_BASE_ADDRESS_SPACE = 0x01  # 0 = memory, 1 = I/O
PCI_BASE_ADDRESS_SPACE_IO = 0x01
PCI_BASE_ADDRESS_SPACE_MEMORY = 0x00
PCI_BASE_ADDRESS_MEM_TYPE_MASK = 0x06
PCI_BASE_ADDRESS_MEM_TYPE_32 = 0x00  # 32 bit address
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x04  # 64 bit address
PCI_BASE_ADDRESS_MEM_PREFETCH = 0x08  # prefetchable?
PCI_BASE_ADDRESS_MEM_MASK = ~0x0F  # C: (~0x0fUL)
PCI_BASE_ADDRESS_IO_MASK = ~0x03  # C: (~0x03UL)

PCI_CARDBUS_CIS = 0x28
PCI_SUBSYSTEM_VENDOR_ID = 0x2C
PCI_SUBSYSTEM_ID = 0x2E
PCI_ROM_ADDRESS = 0x30  # Bits 31..11 are address, 10..1 reserved
PCI_ROM_ADDRESS_ENABLE = 0x01
PCI_ROM_ADDRESS_MASK = 0xFFFFF800  # C: (~0x7ffU), an unsigned int

PCI_CAPABILITY_LIST = 0x34  # Offset of first capability list entry

PCI_INTERRUPT_LINE = 0x3C  # 8 bits
PCI_INTERRUPT_PIN = 0x3D  # 8 bits
PCI_MIN_GNT = 0x3E  # 8 bits
PCI_MAX_LAT = 0x3F  # 8 bits

# ---------------------------------------------------------------------------------------------
# Capability lists: every capability starts with an ID byte and a next pointer.


class PciCapId(IntEnum):
    """PCI capability IDs (``PCI_CAP_ID_*``; PCI Code and ID Assignment Spec, 2)."""

    PM = 0x01  # Power Management
    AGP = 0x02  # Accelerated Graphics Port
    VPD = 0x03  # Vital Product Data
    SLOTID = 0x04  # Slot Identification
    MSI = 0x05  # Message Signalled Interrupts
    CHSWP = 0x06  # CompactPCI HotSwap
    PCIX = 0x07  # PCI-X
    HT = 0x08  # HyperTransport
    VNDR = 0x09  # Vendor-Specific
    DBG = 0x0A  # Debug port
    CCRC = 0x0B  # CompactPCI Central Resource Control
    SHPC = 0x0C  # PCI Standard Hot-Plug Controller
    SSVID = 0x0D  # Bridge subsystem vendor/device ID
    AGP3 = 0x0E  # AGP Target PCI-PCI bridge
    SECDEV = 0x0F  # Secure Device
    EXP = 0x10  # PCI Express
    MSIX = 0x11  # MSI-X
    SATA = 0x12  # SATA Data/Index Conf.
    AF = 0x13  # PCI Advanced Features
    EA = 0x14  # PCI Enhanced Allocation


PCI_CAP_LIST_ID = 0  # Capability ID
PCI_CAP_ID_PM = PciCapId.PM
PCI_CAP_ID_MSI = PciCapId.MSI
PCI_CAP_ID_VNDR = PciCapId.VNDR
PCI_CAP_ID_EXP = PciCapId.EXP
PCI_CAP_ID_MSIX = PciCapId.MSIX
PCI_CAP_ID_MAX = PciCapId.EA
PCI_CAP_LIST_NEXT = 1  # Next capability in the list
PCI_CAP_FLAGS = 2  # Capability defined flags (16 bits)
PCI_CAP_SIZEOF = 4

# ---------------------------------------------------------------------------------------------
# Power Management capability (PCI PM 1.2, 3.2)
#
#     dword  byte   31            24 23            16 15             8 7              0
#       0    0x00  |  PM Capabilities (PMC)          |  Next Pointer  |  Cap ID (01h)  |
#       1    0x04  |     Data       | PMCSR_BSE      |  PM Control/Status (PMCSR)      |

PCI_PM_PMC = 2  # PM Capabilities Register
PCI_PM_CAP_VER_MASK = 0x0007  # Version
PCI_PM_CAP_PME_CLOCK = 0x0008  # PME clock required
PCI_PM_CAP_DSI = 0x0020  # Device specific initialization
PCI_PM_CAP_AUX_POWER = 0x01C0  # Auxiliary power support mask
PCI_PM_CAP_D1 = 0x0200  # D1 power state support
PCI_PM_CAP_D2 = 0x0400  # D2 power state support
PCI_PM_CAP_PME = 0x0800  # PME pin supported
PCI_PM_CAP_PME_MASK = 0xF800  # PME Mask of all supported states
PCI_PM_CTRL = 4  # PM control and status register
PCI_PM_CTRL_STATE_MASK = 0x0003  # Current power state (D0 to D3)
PCI_PM_CTRL_NO_SOFT_RESET = 0x0008  # No reset for D3hot->D0
PCI_PM_CTRL_PME_ENABLE = 0x0100  # PME pin enable
PCI_PM_CTRL_DATA_SEL_MASK = 0x1E00  # Data select
PCI_PM_CTRL_DATA_SCALE_MASK = 0x6000  # Data scale
PCI_PM_CTRL_PME_STATUS = 0x8000  # PME pin status
PCI_PM_PPB_EXTENSIONS = 6  # PPB support extensions
PCI_PM_DATA_REGISTER = 7
PCI_PM_SIZEOF = 8

# ---------------------------------------------------------------------------------------------
# MSI capability (PCI 3.0, 6.8.1).  Four layouts: 32/64-bit address, with/without masking.
#
#     32-bit, no masking                     64-bit, no masking
#     0x00 | Message Control | Next | ID |   0x00 | Message Control | Next | ID |
#     0x04 |      Message Address       |   0x04 |   Message Address (low)    |
#     0x08 |          | Message Data    |   0x08 |   Message Address (high)   |
#                                            0x0c |          | Message Data    |
#
#     32-bit, per-vector masking             64-bit, per-vector masking
#     0x00 | Message Control | Next | ID |   0x00 | Message Control | Next | ID |
#     0x04 |      Message Address       |   0x04 |   Message Address (low)    |
#     0x08 |          | Message Data    |   0x08 |   Message Address (high)   |
#     0x0c |         Mask Bits          |   0x0c |          | Message Data    |
#     0x10 |        Pending Bits        |   0x10 |         Mask Bits          |
#                                            0x14 |        Pending Bits        |

PCI_MSI_FLAGS = 0x02  # Message Control
PCI_MSI_FLAGS_ENABLE = 0x0001  # MSI feature enabled
PCI_MSI_FLAGS_QMASK = 0x000E  # Maximum queue size available
PCI_MSI_FLAGS_QSIZE = 0x0070  # Message queue size configured
PCI_MSI_FLAGS_64BIT = 0x0080  # 64-bit addresses allowed
PCI_MSI_FLAGS_MASKBIT = 0x0100  # Per-vector masking capable
PCI_MSI_RFU = 3  # Rest of capability flags
PCI_MSI_ADDRESS_LO = 0x04  # Lower 32 bits
PCI_MSI_ADDRESS_HI = 0x08  # Upper 32 bits (if PCI_MSI_FLAGS_64BIT set)
PCI_MSI_DATA_32 = 0x08  # 16 bits of data for 32-bit devices
PCI_MSI_MASK_32 = 0x0C  # Mask bits register for 32-bit devices
PCI_MSI_PENDING_32 = 0x10  # Pending intrs for 32-bit devices
PCI_MSI_DATA_64 = 0x0C  # 16 bits of data for 64-bit devices
PCI_MSI_MASK_64 = 0x10  # Mask bits register for 64-bit devices
PCI_MSI_PENDING_64 = 0x14  # Pending intrs for 64-bit devices

# ---------------------------------------------------------------------------------------------
# MSI-X capability (PCI 3.0, 6.8.2)
#
#     0x00 |  Message Control  | Next | ID (11h) |
#     0x04 |  Table Offset             | Table BIR |
#     0x08 |  PBA Offset               |  PBA BIR  |
#
# Table entry (in the BAR named by the BIR), PCI_MSIX_ENTRY_SIZE bytes each:
#     0x0 Message Address | 0x4 Message Upper Address | 0x8 Message Data | 0xc Vector Control

PCI_MSIX_FLAGS = 2  # Message Control
PCI_MSIX_FLAGS_QSIZE = 0x07FF  # Table size
PCI_MSIX_FLAGS_MASKALL = 0x4000  # Mask all vectors for this function
PCI_MSIX_FLAGS_ENABLE = 0x8000  # MSI-X enable
PCI_MSIX_TABLE = 4  # Table offset
PCI_MSIX_TABLE_BIR = 0x00000007  # BAR index
PCI_MSIX_TABLE_OFFSET = 0xFFFFFFF8  # Offset into specified BAR
PCI_MSIX_PBA = 8  # Pending Bit Array offset
PCI_MSIX_PBA_BIR = 0x00000007  # BAR index
PCI_MSIX_PBA_OFFSET = 0xFFFFFFF8  # Offset into specified BAR
PCI_CAP_MSIX_SIZEOF = 12  # size of MSIX registers

PCI_MSIX_ENTRY_SIZE = 16
PCI_MSIX_ENTRY_LOWER_ADDR = 0x0  # Message Address
PCI_MSIX_ENTRY_UPPER_ADDR = 0x4  # Message Upper Address
PCI_MSIX_ENTRY_DATA = 0x8  # Message Data
PCI_MSIX_ENTRY_VECTOR_CTRL = 0xC  # Vector Control
PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x00000001

# ---------------------------------------------------------------------------------------------
# PCI Express capability (PCIe Base Spec 7.5.3), version 2, endpoint: 0x3c bytes
#
#     dword  byte   31                            16 15             8 7              0
#       0    0x00  |   PCI Express Capabilities     |  Next Pointer  |  Cap ID (10h)  |
#       1    0x04  |                   Device Capabilities                           |
#       2    0x08  |        Device Status           |         Device Control         |
#       3    0x0c  |                    Link Capabilities                            |
#       4    0x10  |         Link Status            |          Link Control          |
#       5    0x14  |                    Slot Capabilities                            |
#       6    0x18  |         Slot Status            |          Slot Control          |
#       7    0x1c  |    Root Capabilities           |          Root Control          |
#       8    0x20  |                       Root Status                               |
#       9    0x24  |                   Device Capabilities 2                         |
#      10    0x28  |       Device Status 2          |        Device Control 2        |
#      11    0x2c  |                    Link Capabilities 2                          |
#      12    0x30  |        Link Status 2           |         Link Control 2         |
#      13    0x34  |                    Slot Capabilities 2                          |
#      14    0x38  |        Slot Status 2           |         Slot Control 2         |

PCI_EXP_FLAGS = 0x02  # Capabilities register
PCI_EXP_FLAGS_VERS = 0x000F  # Capability version
PCI_EXP_FLAGS_TYPE = 0x00F0  # Device/Port type
PCI_EXP_TYPE_ENDPOINT = 0x0  # Express Endpoint
PCI_EXP_TYPE_LEG_END = 0x1  # Legacy Endpoint
PCI_EXP_TYPE_RC_END = 0x9  # Root Complex Integrated Endpoint
PCI_EXP_FLAGS_SLOT = 0x0100  # Slot implemented
PCI_EXP_FLAGS_IRQ = 0x3E00  # Interrupt message number
PCI_EXP_DEVCAP = 0x04  # Device capabilities
PCI_EXP_DEVCAP_PAYLOAD = 0x00000007  # Max_Payload_Size
PCI_EXP_DEVCAP_FLR = 0x10000000  # Function Level Reset
PCI_EXP_DEVCTL = 0x08  # Device Control
PCI_EXP_DEVCTL_CERE = 0x0001  # Correctable Error Reporting En.
PCI_EXP_DEVCTL_NFERE = 0x0002  # Non-Fatal Error Reporting Enable
PCI_EXP_DEVCTL_FERE = 0x0004  # Fatal Error Reporting Enable
PCI_EXP_DEVCTL_URRE = 0x0008  # Unsupported Request Reporting En.
PCI_EXP_DEVCTL_RELAX_EN = 0x0010  # Enable relaxed ordering
PCI_EXP_DEVCTL_PAYLOAD = 0x00E0  # Max_Payload_Size
PCI_EXP_DEVCTL_EXT_TAG = 0x0100  # Extended Tag Field Enable
PCI_EXP_DEVCTL_PHANTOM = 0x0200  # Phantom Functions Enable
PCI_EXP_DEVCTL_AUX_PME = 0x0400  # Auxiliary Power PM Enable
PCI_EXP_DEVCTL_NOSNOOP_EN = 0x0800  # Enable No Snoop
PCI_EXP_DEVCTL_READRQ = 0x7000  # Max_Read_Request_Size
PCI_EXP_DEVCTL_BCR_FLR = 0x8000  # Bridge Configuration Retry / FLR
PCI_EXP_DEVSTA = 0x0A  # Device Status
PCI_EXP_DEVSTA_CED = 0x0001  # Correctable Error Detected
PCI_EXP_DEVSTA_NFED = 0x0002  # Non-Fatal Error Detected
PCI_EXP_DEVSTA_FED = 0x0004  # Fatal Error Detected
PCI_EXP_DEVSTA_URD = 0x0008  # Unsupported Request Detected
PCI_EXP_DEVSTA_TRPND = 0x0020  # Transactions Pending
PCI_EXP_LNKCAP = 0x0C  # Link Capabilities
PCI_EXP_LNKCTL = 0x10  # Link Control
PCI_EXP_LNKSTA = 0x12  # Link Status
PCI_EXP_SLTCAP = 0x14  # Slot Capabilities
PCI_EXP_SLTCTL = 0x18  # Slot Control
PCI_EXP_SLTSTA = 0x1A  # Slot Status
PCI_EXP_RTCTL = 0x1C  # Root Control
PCI_EXP_RTCAP = 0x1E  # Root Capabilities
PCI_EXP_RTSTA = 0x20  # Root Status
PCI_EXP_DEVCAP2 = 0x24  # Device Capabilities 2
PCI_EXP_DEVCTL2 = 0x28  # Device Control 2
PCI_EXP_DEVCTL2_ARI = 0x0020  # Alternative Routing-ID
PCI_EXP_DEVSTA2 = 0x2A  # Device Status 2
PCI_EXP_LNKCAP2 = 0x2C  # Link Capabilities 2
PCI_EXP_LNKCTL2 = 0x30  # Link Control 2
PCI_EXP_LNKSTA2 = 0x32  # Link Status 2
PCI_EXP_SLTCAP2 = 0x34  # Slot Capabilities 2
PCI_EXP_SLTCTL2 = 0x38  # Slot Control 2
PCI_EXP_SLTSTA2 = 0x3A  # Slot Status 2

PCI_CAP_EXP_RC_ENDPOINT_SIZEOF_V1 = 12  # v1 endpoints without link end here
PCI_CAP_EXP_ENDPOINT_SIZEOF_V1 = 20  # v1 endpoints with link end here
PCI_CAP_EXP_RC_ENDPOINT_SIZEOF_V2 = 0x2C  # end of v2 EPs w/o link
# 0x32 up to Linux 6.19: fb82437fdd8c ("PCI: Change capability register offsets to hex")
# turned decimal 52 into 0x32 by mistake; v7.0 restores 0x34 ("PCI: Correct
# PCI_CAP_EXP_ENDPOINT_SIZEOF_V2 value").  vfio-pci sizes a v2 endpoint's PCIe capability
# with it (vfio_cap_len(), vfio_pci_config.c).  This is the value of 6.18, SPEC's default.
PCI_CAP_EXP_ENDPOINT_SIZEOF_V2 = 0x32  # end of v2 EPs w/ link

# ---------------------------------------------------------------------------------------------
# devfn helpers: include/uapi/linux/pci.h (vfio_pci_dependent_device.devfn: "Use PCI_SLOT/
# PCI_FUNC").


def PCI_DEVFN(slot: int, func: int) -> int:
    """``PCI_DEVFN(slot, func)``: ``((slot & 0x1f) << 3) | (func & 0x07)``."""
    return ((slot & 0x1F) << 3) | (func & 0x07)


def PCI_SLOT(devfn: int) -> int:
    """``PCI_SLOT(devfn)``: the device number."""
    return (devfn >> 3) & 0x1F


def PCI_FUNC(devfn: int) -> int:
    """``PCI_FUNC(devfn)``: the function number."""
    return devfn & 0x07
