"""pread/pwrite on the device fd: the region rules of SPEC §11.3 (in the kernel's order), the
BAR access widths (§2.7 #17), the MSI-X table hole, and config space virtualisation (§11.2)."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest
from device_helpers import (
    BAR0,
    CONFIG,
    DMACOPY,
    EDU,
    EDU_ID,
    EDU_IRQ_ACK,
    EDU_IRQ_RAISE,
    EDU_LIVENESS,
    EventFds,
    bar_read,
    bar_write,
    cfg_read,
    cfg_write,
    enable_bus_master,
    expect_errno,
    open_device,
    set_trigger,
)

from vfiosim.uapi import pci_regs as R
from vfiosim.uapi import vfio as V

ROM = V.VFIO_PCI_INDEX_TO_OFFSET(V.VFIO_PCI_ROM_REGION_INDEX)
VGA = V.VFIO_PCI_INDEX_TO_OFFSET(V.VFIO_PCI_VGA_REGION_INDEX)
ONES4 = b"\xff" * 4


@pytest.fixture
def edu(x86):  # noqa: ANN001, ANN201
    return open_device(x86, EDU)


@pytest.fixture
def efds() -> Iterator[EventFds]:
    e = EventFds()
    yield e
    e.close()


# ---------------------------------------------------------------------------------------------
# Region rules, in order


@pytest.mark.parametrize("offset", [0, CONFIG + 4096, VGA, 9 << 40, 63 << 40, ROM])
def test_count_zero_is_zero_anywhere(edu, offset: int) -> None:
    assert edu.k.pread(edu.fd, 0, offset) == b""
    assert edu.k.pwrite(edu.fd, b"", offset) == 0


@pytest.mark.parametrize("offset", [9 << 40, (9 << 40) + 4, 0xFF << 40])
def test_index_beyond_regions_einval(edu, offset: int) -> None:
    expect_errno(errno.EINVAL, edu.k.pread, edu.fd, 4, offset)
    expect_errno(errno.EINVAL, edu.k.pwrite, edu.fd, b"\0" * 4, offset)


def test_vga_einval(edu) -> None:
    expect_errno(errno.EINVAL, edu.k.pread, edu.fd, 4, VGA)
    expect_errno(errno.EINVAL, edu.k.pwrite, edu.fd, ONES4, VGA + 0x3C0)


@pytest.mark.parametrize("off,n", [(256, 1), (255, 2), (0, 257), (252, 8), (1 << 39, 4)])
def test_config_past_end_efault_not_truncated(edu, off: int, n: int) -> None:
    expect_errno(errno.EFAULT, edu.k.pread, edu.fd, n, CONFIG + off)
    expect_errno(errno.EFAULT, edu.k.pwrite, edu.fd, b"\0" * n, CONFIG + off)


def test_config_whole_read_equals_pieces(edu) -> None:
    whole = edu.k.pread(edu.fd, 256, CONFIG)
    assert len(whole) == 256
    pieces = b"".join(edu.k.pread(edu.fd, 1, CONFIG + i) for i in range(256))
    assert whole == pieces
    odd = edu.k.pread(edu.fd, 7, CONFIG + 0x3B)  # crosses header -> MSI capability
    assert odd == whole[0x3B:0x42]


def test_rom_write_einval_read_einval(edu) -> None:
    expect_errno(errno.EINVAL, edu.k.pwrite, edu.fd, ONES4, ROM)
    expect_errno(errno.EINVAL, edu.k.pread, edu.fd, 4, ROM)  # edu has no ROM: size 0


@pytest.mark.parametrize("bar", [1, 2, 5])
def test_absent_bar_einval(edu, bar: int) -> None:
    expect_errno(errno.EINVAL, edu.k.pread, edu.fd, 4, V.VFIO_PCI_INDEX_TO_OFFSET(bar))
    expect_errno(errno.EINVAL, edu.k.pwrite, edu.fd, ONES4, V.VFIO_PCI_INDEX_TO_OFFSET(bar))


def test_bar_offset_at_or_past_size_einval(edu) -> None:
    expect_errno(errno.EINVAL, edu.k.pread, edu.fd, 4, BAR0 + 0x10_0000)
    expect_errno(errno.EINVAL, edu.k.pwrite, edu.fd, ONES4, BAR0 + 0x10_0000)


def test_bar_count_past_end_truncated(edu) -> None:
    got = edu.k.pread(edu.fd, 16, BAR0 + 0xF_FFFC)
    assert got == ONES4  # the last dword (unlisted offset: all-ones), 4 bytes only
    assert edu.k.pwrite(edu.fd, b"\0" * 16, BAR0 + 0xF_FFF8) == 8


def test_memory_space_off_eio(edu) -> None:
    assert bar_read(edu, EDU_ID) == 0x010000ED
    cfg_write(edu, R.PCI_COMMAND, 2, 0)
    assert not edu.hw.memory_enabled
    expect_errno(errno.EIO, edu.k.pread, edu.fd, 4, BAR0)
    expect_errno(errno.EIO, edu.k.pwrite, edu.fd, ONES4, BAR0 + EDU_LIVENESS)
    cfg_write(edu, R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY)
    assert bar_read(edu, EDU_ID) == 0x010000ED


# ---------------------------------------------------------------------------------------------
# Access widths through to edu (SPEC §11.1, §2.7 #17)


def test_edu_identification_and_liveness(edu) -> None:
    assert bar_read(edu, EDU_ID) == 0x010000ED
    bar_write(edu, EDU_LIVENESS, 0x12345678)
    assert bar_read(edu, EDU_LIVENESS) == 0xEDCBA987
    assert bar_read(edu, EDU_IRQ_RAISE) == 0xFFFF_FFFF  # write-only register


def test_edu_small_accesses_read_zero(edu) -> None:
    assert edu.k.pread(edu.fd, 2, BAR0) == b"\0\0"
    assert edu.k.pread(edu.fd, 1, BAR0) == b"\0"
    bar_write(edu, EDU_LIVENESS, 0)
    assert edu.k.pread(edu.fd, 3, BAR0 + EDU_LIVENESS) == b"\0\0\0"  # 2 + 1 byte pieces


def test_eight_byte_access_6_18(edu) -> None:
    """8-byte pieces: one access at 0x80; at 0x84, 4 + 4 bytes."""
    edu.k.pwrite(edu.fd, (0x1122334455667788).to_bytes(8, "little"), BAR0 + 0x80)
    assert bar_read(edu, 0x80, 8) == 0x1122334455667788
    bar_write(edu, 0x88, 0xAABBCCDD)
    assert edu.k.pread(edu.fd, 8, BAR0 + 0x84) == ONES4 + (0xAABBCCDD).to_bytes(4, "little")
    # below 0x80 an 8-byte access reads all-ones
    assert edu.k.pread(edu.fd, 8, BAR0) == b"\xff" * 8


def test_eight_byte_access_before_6_14(make_kernel) -> None:
    """§2.7 #17: two 4-byte pieces; the upper half is lost on write, all-ones on read."""
    k = make_kernel("x86", kernel="6.13")
    edu = open_device(k)
    k.pwrite(edu.fd, (0x1122334455667788).to_bytes(8, "little"), BAR0 + 0x80)
    assert bar_read(edu, 0x80, 4) == 0x55667788
    assert k.pread(edu.fd, 8, BAR0 + 0x80) == (0x55667788).to_bytes(4, "little") + ONES4
    assert k.pread(edu.fd, 8, BAR0) == (0x010000ED).to_bytes(4, "little") + bytes(4)


# ---------------------------------------------------------------------------------------------
# The MSI-X table of dmacopy's BAR0


def test_msix_table_hole(x86, efds) -> None:
    dev = open_device(x86, DMACOPY)
    table = dev.vdev.msix_offset
    assert (dev.vdev.msix_bar, table, dev.vdev.msix_size) == (0, 0x2000, 8 * 16)
    assert x86.pread(dev.fd, 16, BAR0 + table) == b"\xff" * 16
    before = [list(e) for e in dev.hw.msix_cap.entries]
    x86.pwrite(dev.fd, b"\0" * 16, BAR0 + table)
    assert dev.hw.msix_cap.entries == before
    # programmed entries stay hidden: the hole reads all-ones, whatever the table holds
    set_trigger(dev, V.VFIO_PCI_MSIX_IRQ_INDEX, efds.new())
    assert dev.hw.msix_cap.entries[0][0] == 0xFEE0_0000
    assert x86.pread(dev.fd, 16, BAR0 + table) == b"\xff" * 16
    # a write straddling the hole counts every byte and changes no entry
    entries = [list(e) for e in dev.hw.msix_cap.entries]
    assert x86.pwrite(dev.fd, b"\0" * 12, BAR0 + table - 4) == 12
    assert dev.hw.msix_cap.entries == entries
    # the PBA is not excluded
    assert x86.pread(dev.fd, 8, BAR0 + 0x3000) == bytes(8)
    # quirk: the excluded range never touches the device, so memory-space off is not EIO
    cfg_write(dev, R.PCI_COMMAND, 2, 0)
    assert x86.pread(dev.fd, 4, BAR0 + table) == ONES4
    expect_errno(errno.EIO, x86.pread, dev.fd, 4, BAR0)


# ---------------------------------------------------------------------------------------------
# Config space virtualisation (SPEC §11.2), edu


def test_edu_header(edu) -> None:
    assert cfg_read(edu, R.PCI_VENDOR_ID, 2) == 0x1234
    assert cfg_read(edu, R.PCI_DEVICE_ID, 2) == 0x11E8
    assert cfg_read(edu, R.PCI_COMMAND, 2) == 0x0002
    assert cfg_read(edu, R.PCI_STATUS, 2) == 0x0010
    assert cfg_read(edu, R.PCI_CLASS_REVISION, 4) == 0xFF000010
    assert cfg_read(edu, R.PCI_SUBSYSTEM_VENDOR_ID, 2) == 0x1AF4
    assert cfg_read(edu, R.PCI_SUBSYSTEM_ID, 2) == 0x1100
    assert cfg_read(edu, R.PCI_CAPABILITY_LIST, 1) == 0x40
    assert cfg_read(edu, R.PCI_INTERRUPT_LINE, 1) == 11
    assert cfg_read(edu, R.PCI_INTERRUPT_PIN, 1) == 1
    assert cfg_read(edu, R.PCI_BASE_ADDRESS_0, 4) == 0xFE00_0000
    for i in range(1, 6):
        assert cfg_read(edu, R.PCI_BASE_ADDRESS_0 + 4 * i, 4) == 0
    assert cfg_read(edu, R.PCI_ROM_ADDRESS, 4) == 0


def test_vendor_device_read_only(edu) -> None:
    cfg_write(edu, R.PCI_VENDOR_ID, 4, 0xFFFF_FFFF)
    assert cfg_read(edu, R.PCI_VENDOR_ID, 4) == 0x11E8_1234


def test_command_bus_master_and_memory_take_effect(edu) -> None:
    cfg_write(edu, R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER)
    assert cfg_read(edu, R.PCI_COMMAND, 2) == 0x0006
    assert edu.hw.bus_master and edu.hw.memory_enabled
    cfg_write(edu, R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY)
    assert cfg_read(edu, R.PCI_COMMAND, 2) == 0x0002
    assert not edu.hw.bus_master


def test_intx_disable_is_virtual(edu) -> None:
    cfg_write(edu, R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_INTX_DISABLE)
    assert cfg_read(edu, R.PCI_COMMAND, 2) == 0x0402
    assert edu.hw.cfg_read(R.PCI_COMMAND, 2) & R.PCI_COMMAND_INTX_DISABLE == 0
    assert edu.vdev.virq_disabled
    cfg_write(edu, R.PCI_COMMAND + 1, 1, 0)  # byte write of the upper half clears it
    assert cfg_read(edu, R.PCI_COMMAND, 2) == 0x0002
    assert not edu.vdev.virq_disabled


def test_status_interrupt_follows_device(edu) -> None:
    bar_write(edu, EDU_IRQ_RAISE, 1)  # MSI off: edu asserts INTx
    assert cfg_read(edu, R.PCI_STATUS, 2) == 0x0018
    bar_write(edu, EDU_IRQ_ACK, 1)
    assert cfg_read(edu, R.PCI_STATUS, 2) == 0x0010
    cfg_write(edu, R.PCI_STATUS, 2, 0xFFFF)  # no writable status bits for the user
    assert cfg_read(edu, R.PCI_STATUS, 2) == 0x0010


def test_cache_line_size_reaches_device(edu) -> None:
    cfg_write(edu, R.PCI_CACHE_LINE_SIZE, 1, 0x10)
    assert cfg_read(edu, R.PCI_CACHE_LINE_SIZE, 1) == 0x10
    assert edu.hw.cfg_read(R.PCI_CACHE_LINE_SIZE, 1) == 0x10


def test_bar0_sizing_is_virtual(edu) -> None:
    real = edu.hw.cfg_read(R.PCI_BASE_ADDRESS_0, 4)
    cfg_write(edu, R.PCI_BASE_ADDRESS_0, 4, 0xFFFF_FFFF)
    assert cfg_read(edu, R.PCI_BASE_ADDRESS_0, 4) == 0xFFF0_0000
    cfg_write(edu, R.PCI_BASE_ADDRESS_0, 4, 0xC012_3456)
    assert cfg_read(edu, R.PCI_BASE_ADDRESS_0, 4) == 0xC010_0000
    assert edu.hw.cfg_read(R.PCI_BASE_ADDRESS_0, 4) == real
    cfg_write(edu, R.PCI_BASE_ADDRESS_1, 4, 0xFFFF_FFFF)
    assert cfg_read(edu, R.PCI_BASE_ADDRESS_1, 4) == 0
    cfg_write(edu, R.PCI_ROM_ADDRESS, 4, 0xFFFF_FFFF)
    assert cfg_read(edu, R.PCI_ROM_ADDRESS, 4) == 0


def test_interrupt_line_virtual_pin_read_only(edu) -> None:
    cfg_write(edu, R.PCI_INTERRUPT_LINE, 2, 0x0505)
    assert cfg_read(edu, R.PCI_INTERRUPT_LINE, 1) == 5
    assert cfg_read(edu, R.PCI_INTERRUPT_PIN, 1) == 1
    assert edu.hw.cfg_read(R.PCI_INTERRUPT_LINE, 1) == 11


def test_other_header_bytes_ignore_writes(edu) -> None:
    cfg_write(edu, R.PCI_CARDBUS_CIS, 4, 0x1234_5678)
    assert cfg_read(edu, R.PCI_CARDBUS_CIS, 4) == 0
    cfg_write(edu, R.PCI_CAPABILITY_LIST, 1, 0x80)
    assert cfg_read(edu, R.PCI_CAPABILITY_LIST, 1) == 0x40


def test_msi_capability(edu, efds) -> None:
    base = 0x40
    assert cfg_read(edu, base, 4) == 0x0080_0005  # id 5, next 0, control 64-bit
    # Enable is refused while MSI is not enabled through SET_IRQS; MME clamped to 0
    cfg_write(edu, base + R.PCI_MSI_FLAGS, 2, 0x00F1)
    assert cfg_read(edu, base + R.PCI_MSI_FLAGS, 2) == 0x0080
    # quirk (vfio_pci_config.c init_pci_cap_msi_perm): the whole low byte of the control
    # word is virtual and writable, so a write without bit 7 clears "64-bit" in the user's
    # view; the device's read-only bit is unchanged.
    cfg_write(edu, base + R.PCI_MSI_FLAGS, 2, 0x0071)
    assert cfg_read(edu, base + R.PCI_MSI_FLAGS, 2) == 0x0000
    assert edu.hw.cfg_read(base + R.PCI_MSI_FLAGS, 2) == 0x0080
    cfg_write(edu, base + R.PCI_MSI_FLAGS, 2, 0x0080)
    assert edu.hw.msi_kind is None
    # address and data are virtual
    cfg_write(edu, base + R.PCI_MSI_ADDRESS_LO, 4, 0xDEAD_BEEC)
    cfg_write(edu, base + R.PCI_MSI_ADDRESS_HI, 4, 0x1)
    cfg_write(edu, base + R.PCI_MSI_DATA_64, 2, 0x4321)
    assert cfg_read(edu, base + R.PCI_MSI_ADDRESS_LO, 4) == 0xDEAD_BEEC
    assert cfg_read(edu, base + R.PCI_MSI_ADDRESS_HI, 4) == 0x1
    assert cfg_read(edu, base + R.PCI_MSI_DATA_64, 2) == 0x4321
    assert edu.hw.msi_cap.address == 0 and edu.hw.msi_cap.data == 0
    # SET_IRQS enables MSI in the device, not in the virtual control word
    set_trigger(edu, V.VFIO_PCI_MSI_IRQ_INDEX, efds.new())
    assert edu.hw.msi_kind == "msi"
    assert edu.hw.msi_cap.address == 0xFEE0_0000
    assert cfg_read(edu, base + R.PCI_MSI_FLAGS, 2) == 0x0080
    assert cfg_read(edu, base + R.PCI_MSI_ADDRESS_LO, 4) == 0xDEAD_BEEC
    # now a user Enable sticks (and reaches the device)
    cfg_write(edu, base + R.PCI_MSI_FLAGS, 2, 0x0081)
    assert cfg_read(edu, base + R.PCI_MSI_FLAGS, 2) == 0x0081
    assert edu.hw.msi_kind == "msi"


def test_device_specific_config_passes_through(edu) -> None:
    cfg_write(edu, 0x50, 4, 0xCAFE_BABE)
    assert cfg_read(edu, 0x50, 4) == 0xCAFE_BABE
    assert edu.hw.cfg_read(0x50, 4) == 0xCAFE_BABE
    # 0x4C: MSI data (virtual, 2 bytes) then 0x4E: the device's storage, in one pread
    cfg_write(edu, 0x4E, 2, 0xBEEF)
    assert edu.hw.cfg_read(0x4E, 2) == 0xBEEF
    cfg_write(edu, 0x4C, 2, 0x1111)
    assert cfg_read(edu, 0x4C, 4) == 0xBEEF_1111
    assert edu.hw.cfg_read(0x4C, 2) == 0


# ---------------------------------------------------------------------------------------------
# dmacopy: PCI Express, PM and MSI-X capabilities


def test_dmacopy_capabilities(x86, efds) -> None:
    dev = open_device(x86, DMACOPY)
    assert cfg_read(dev, R.PCI_CAPABILITY_LIST, 1) == 0x40
    assert cfg_read(dev, 0x40, 1) == R.PCI_CAP_ID_EXP
    assert cfg_read(dev, 0x80, 1) == R.PCI_CAP_ID_PM
    assert cfg_read(dev, 0x90, 1) == R.PCI_CAP_ID_MSIX
    assert cfg_read(dev, 0x100, 4) == 0  # no extended capabilities
    assert len(x86.pread(dev.fd, 4096, CONFIG)) == 4096
    expect_errno(errno.EFAULT, x86.pread, dev.fd, 4, CONFIG + 4096)
    # MSI-X control is read from the device and user writes are dropped
    ctl = 0x90 + R.PCI_MSIX_FLAGS
    assert cfg_read(dev, ctl, 2) == 0x0007
    cfg_write(dev, ctl, 2, R.PCI_MSIX_FLAGS_ENABLE)
    assert cfg_read(dev, ctl, 2) == 0x0007 and dev.hw.msi_kind is None
    set_trigger(dev, V.VFIO_PCI_MSIX_IRQ_INDEX, efds.new())
    assert cfg_read(dev, ctl, 2) == R.PCI_MSIX_FLAGS_ENABLE | 0x0007
    cfg_write(dev, ctl, 2, 0)
    assert dev.hw.msi_kind == "msix"


def test_dmacopy_flr_through_devctl(x86) -> None:
    dev = open_device(x86, DMACOPY)
    bar_write(dev, 0x018, 64)  # RING_SIZE
    assert bar_read(dev, 0x018) == 64
    devctl = 0x40 + R.PCI_EXP_DEVCTL
    before = cfg_read(dev, devctl, 2)
    cfg_write(dev, devctl, 2, before | R.PCI_EXP_DEVCTL_BCR_FLR)
    assert cfg_read(dev, devctl, 2) & R.PCI_EXP_DEVCTL_BCR_FLR == 0
    assert bar_read(dev, 0x018) == 0  # the function was reset
    assert cfg_read(dev, R.PCI_COMMAND, 2) == 0x0002  # its config restored


def test_dmacopy_pm_state_bits(x86) -> None:
    dev = open_device(x86, DMACOPY)
    ctrl = 0x80 + R.PCI_PM_CTRL
    assert cfg_read(dev, ctrl, 2) & R.PCI_PM_CTRL_STATE_MASK == 0
    cfg_write(dev, ctrl, 2, 3)
    assert dev.hw.cfg_read(ctrl, 2) & R.PCI_PM_CTRL_STATE_MASK == 3
    cfg_write(dev, ctrl, 2, 0)
    assert cfg_read(dev, ctrl, 2) & R.PCI_PM_CTRL_STATE_MASK == 0


def test_dmacopy_d3hot_bar_eio_and_state_restored_at_d0(x86) -> None:
    """``__vfio_pci_memory_enabled()``: no BAR access while the device is in D3hot (EIO);
    ``vfio_pm_config_write()`` -> ``vfio_pci_set_power_state()``: dmacopy resets on
    D3hot -> D0 (No_Soft_Reset clear, ``needs_pm_restore``), and the state saved on the way
    down is restored, so memory decoding and bus mastering survive."""
    dev = open_device(x86, DMACOPY)
    enable_bus_master(dev)
    assert bar_read(dev, 0x000) == 0x444D4143  # DMAC_REG_ID
    ctrl = 0x80 + R.PCI_PM_CTRL
    cfg_write(dev, ctrl, 2, 3)
    expect_errno(errno.EIO, dev.k.pread, dev.fd, 4, BAR0)
    expect_errno(errno.EIO, dev.k.pwrite, dev.fd, ONES4, BAR0 + 0x008)
    cfg_write(dev, ctrl, 2, 0)
    assert dev.hw.memory_enabled and dev.hw.bus_master
    assert bar_read(dev, 0x000) == 0x444D4143
