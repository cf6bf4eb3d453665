"""Simulated PCI functions: config space, capabilities, BARs (docs/architecture.md §6)."""

from vfiosim.hw.pci.bar import Bar
from vfiosim.hw.pci.caps import MsiCapability, MsixCapability, PcieCapability, PmCapability
from vfiosim.hw.pci.function import PciFunction, PciSavedState
from vfiosim.hw.pci.util import byte_mask_update

__all__ = [
    "Bar",
    "MsiCapability",
    "MsixCapability",
    "PciFunction",
    "PciSavedState",
    "PcieCapability",
    "PmCapability",
    "byte_mask_update",
]
