"""PCI config space virtualisation of vfio-pci.

Models drivers/vfio/pci/vfio_pci_config.c.  SPEC §11.2, §11.3 (config region rules).

The user never touches the device's config space directly.  Every access is cut into pieces
of at most one dword that never cross a capability boundary (``vfio_config_do_rw``), and each
piece is served through the ``perm_bits`` of whatever occupies that byte:

* ``pci_config_map[pos]`` names the owner of each byte: ``PCI_CAP_ID_BASIC`` (0, the 64-byte
  header), a capability id, or ``PCI_CAP_ID_INVALID`` (0xFF) for bytes outside the header and
  every capability.  Extended capabilities (>= 0x100) use their extended ids.
* a ``PermBits`` gives, bit by bit, what is *virtual* (read from / written to ``vconfig``, the
  virtual copy filled from the device at open) and what is *writable*.  Non-virtual bits read
  the device; writable non-virtual bits are written to the device (read-modify-write); bits that
  are not writable are dropped.  ``readfn`` / ``writefn`` add the per-capability side effects
  (BAR sizing, INTx disable emulation, MSI control fix-ups, FLR, power state).
* unassigned bytes pass through raw (``unassigned_perms``): "some devices hide registers in the
  gaps" (the kernel's comment).  Capabilities without a table are read directly from the device
  (their id/next bytes from ``vconfig``) and ignore writes.

Tables (``p_setb``/``p_setw``/``p_setd`` over little-endian byte arrays) are built once for the
fixed-size capabilities, and per device for MSI, whose length depends on its control word.
The MSI-X capability has no table in the kernel: it is read from the device and every user
write is dropped; MSI-X is only ever enabled through VFIO_DEVICE_SET_IRQS.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vfiosim.kernel.pci import intrs
from vfiosim.kernel.uaccess import kerr
from vfiosim.uapi import pci_regs as R

if TYPE_CHECKING:
    from vfiosim.kernel.pci.core import VfioPciDevice

#: Fake capability id of the standard header (vfio_pci_config.c ``PCI_CAP_ID_BASIC``).
PCI_CAP_ID_BASIC = 0
#: ``pci_config_map`` value of bytes no capability claims (vfio_pci_priv.h).
PCI_CAP_ID_INVALID = 0xFF
#: ``pci_config_map`` value of bytes that are purely virtual (vfio_pci_priv.h).
PCI_CAP_ID_INVALID_VIRT = 0xFE

NO_VIRT = 0
ALL_VIRT = 0xFFFF_FFFF
NO_WRITE = 0
ALL_WRITE = 0xFFFF_FFFF

ReadFn = Callable[["VfioPciDevice", int, int, "PermBits", int], int]
WriteFn = Callable[["VfioPciDevice", int, int, "PermBits", int, int], int]


def is_bar(offset: int) -> bool:
    """``is_bar()``: the six BAR dwords and the ROM BAR."""
    return (R.PCI_BASE_ADDRESS_0 <= offset < R.PCI_BASE_ADDRESS_5 + 4) or (
        R.PCI_ROM_ADDRESS <= offset < R.PCI_ROM_ADDRESS + 4
    )


@dataclass
class PermBits:
    """``struct perm_bits``: one bit per bit of the capability.

    ``virt``: read/write the virtual copy, not the hardware.  ``write``: writable bits.  Zero
    state (``alloc_perm_bits``) is all readable, none writable, none virtualised.  Sizes are
    rounded up to a dword so that an access may run over the end of a capability's fields.
    """

    virt: bytearray = field(default_factory=bytearray)
    write: bytearray = field(default_factory=bytearray)
    readfn: ReadFn | None = None
    writefn: WriteFn | None = None


def alloc_perm_bits(size: int) -> PermBits:
    size = (size + 3) & ~3
    return PermBits(bytearray(size), bytearray(size), vfio_default_config_read,
                    vfio_default_config_write)


def p_setb(p: PermBits, off: int, virt: int, write: int) -> None:
    p.virt[off] = virt & 0xFF
    p.write[off] = write & 0xFF


def p_setw(p: PermBits, off: int, virt: int, write: int) -> None:
    p.virt[off:off + 2] = (virt & 0xFFFF).to_bytes(2, "little")
    p.write[off:off + 2] = (write & 0xFFFF).to_bytes(2, "little")


def p_setd(p: PermBits, off: int, virt: int, write: int) -> None:
    p.virt[off:off + 4] = (virt & 0xFFFF_FFFF).to_bytes(4, "little")
    p.write[off:off + 4] = (write & 0xFFFF_FFFF).to_bytes(4, "little")


def _le(buf: bytes | bytearray, off: int, count: int) -> int:
    return int.from_bytes(buf[off:off + count], "little")


def _mask(count: int) -> int:
    return (1 << (8 * count)) - 1


# ---------------------------------------------------------------------------------------------
# Device config access (pci_user_read_config_* / pci_user_write_config_*)


def vfio_user_config_read(vdev: VfioPciDevice, pos: int, count: int) -> int:
    return vdev.hw.cfg_read(pos, count) & _mask(count)


def vfio_user_config_write(vdev: VfioPciDevice, pos: int, value: int, count: int) -> None:
    vdev.hw.cfg_write(pos, count, value & _mask(count))


# ---------------------------------------------------------------------------------------------
# Generic read/write functions


def vfio_default_config_read(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                             offset: int) -> int:
    """``vfio_default_config_read()``: virtual bits from vconfig, the rest from the device."""
    val = _le(vdev.vconfig, pos, count)
    virt = _le(perm.virt, offset, count)
    if virt != _mask(count):  # any non-virtualised bits?
        phys = vfio_user_config_read(vdev, pos, count)
        val = (phys & ~virt) | (val & virt)
    return val & _mask(count)


def vfio_default_config_write(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                              offset: int, val: int) -> int:
    """``vfio_default_config_write()``: writable virtual bits to vconfig, writable physical
    bits to the device (read-modify-write), everything else dropped."""
    write = _le(perm.write, offset, count)
    if not write:
        return count  # drop, no writable bits
    virt = _le(perm.virt, offset, count)
    if write & virt:
        virt_val = _le(vdev.vconfig, pos, count)
        virt_val &= ~(write & virt)
        virt_val |= val & (write & virt)
        vdev.vconfig[pos:pos + count] = (virt_val & _mask(count)).to_bytes(count, "little")
    if write & ~virt & _mask(count):
        phys = vfio_user_config_read(vdev, pos, count)
        phys &= ~(write & ~virt)
        phys |= val & (write & ~virt)
        vfio_user_config_write(vdev, pos, phys, count)
    return count


def vfio_direct_config_read(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                            offset: int) -> int:
    """``vfio_direct_config_read()``: the device, except the capability id/next bytes."""
    val = vfio_user_config_read(vdev, pos, count)
    raw = bytearray(val.to_bytes(count, "little"))
    if pos >= R.PCI_CFG_SPACE_SIZE:  # extended cap header mangling
        if offset < 4:
            raw[:] = vdev.vconfig[pos:pos + count]
    elif pos >= R.PCI_STD_HEADER_SIZEOF:  # standard cap mangling
        if offset == R.PCI_CAP_LIST_ID and count > 1:
            n = min(R.PCI_CAP_FLAGS, count)
            raw[:n] = vdev.vconfig[pos:pos + n]
        elif offset == R.PCI_CAP_LIST_NEXT:
            raw[0] = vdev.vconfig[pos]
    return _le(raw, 0, count)


def vfio_raw_config_read(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                         offset: int) -> int:
    return vfio_user_config_read(vdev, pos, count)


def vfio_raw_config_write(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                          offset: int, val: int) -> int:
    vfio_user_config_write(vdev, pos, val, count)
    return count


def vfio_virt_config_read(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                          offset: int) -> int:
    return _le(vdev.vconfig, pos, count)


def vfio_virt_config_write(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                           offset: int, val: int) -> int:
    vdev.vconfig[pos:pos + count] = (val & _mask(count)).to_bytes(count, "little")
    return count


unassigned_perms = PermBits(readfn=vfio_raw_config_read, writefn=vfio_raw_config_write)
virt_perms = PermBits(readfn=vfio_virt_config_read, writefn=vfio_virt_config_write)


# ---------------------------------------------------------------------------------------------
# Basic header: BAR sizing, command register, INTx disable emulation


def vfio_generate_bar_flags(vdev: VfioPciDevice, bar: int) -> int:
    """``vfio_generate_bar_flags()``: the type bits a BAR of this resource reads with."""
    b = vdev.hw.bars[bar]
    if not getattr(b, "mem", True):
        return R.PCI_BASE_ADDRESS_SPACE_IO
    val = R.PCI_BASE_ADDRESS_SPACE_MEMORY
    if b.prefetch:
        val |= R.PCI_BASE_ADDRESS_MEM_PREFETCH
    if b.is64:
        val |= R.PCI_BASE_ADDRESS_MEM_TYPE_64
    return val


def vfio_bar_fixup(vdev: VfioPciDevice) -> None:
    """``vfio_bar_fixup()``: make the virtual BARs answer like hardware (BAR sizing).

    A BAR the host did not map reads 0; others keep only the address bits their size allows
    plus the type flags; the upper half of a 64-bit BAR keeps the upper mask.  The ROM BAR of
    a device without ROM reads 0.
    """
    if not vdev.bardirty:
        return
    i = 0
    while i < 6:
        off = R.PCI_BASE_ADDRESS_0 + 4 * i
        size = vdev.bar_len(i)
        if not size:
            vdev.vconfig[off:off + 4] = bytes(4)  # unmapped by host = unimplemented to user
            i += 1
            continue
        mask = ~(size - 1) & 0xFFFF_FFFF_FFFF_FFFF
        bar = _le(vdev.vconfig, off, 4) & (mask & 0xFFFF_FFFF)
        bar |= vfio_generate_bar_flags(vdev, i)
        vdev.vconfig[off:off + 4] = bar.to_bytes(4, "little")
        if bar & R.PCI_BASE_ADDRESS_MEM_TYPE_64 and i < 5:
            off += 4
            hi = _le(vdev.vconfig, off, 4) & (mask >> 32)
            vdev.vconfig[off:off + 4] = hi.to_bytes(4, "little")
            i += 1
        i += 1
    # No preset device has an expansion ROM (pci_resource_start(ROM) == 0): the ROM BAR reads 0.
    vdev.vconfig[R.PCI_ROM_ADDRESS:R.PCI_ROM_ADDRESS + 4] = bytes(4)
    vdev.bardirty = False


def vfio_basic_config_read(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                           offset: int) -> int:
    """``vfio_basic_config_read()``."""
    if is_bar(offset):  # pos == offset for the basic header
        vfio_bar_fixup(vdev)
    return vfio_default_config_read(vdev, pos, count, perm, offset)


def vfio_need_bar_restore(vdev: VfioPciDevice) -> bool:
    """``vfio_need_bar_restore()``: a real BAR differs from what it held at open."""
    for i in range(6):
        if vdev.rbar[i]:
            bar = vfio_user_config_read(vdev, R.PCI_BASE_ADDRESS_0 + 4 * i, 4)
            if vdev.rbar[i] != bar:
                return True
    return False


def vfio_bar_restore(vdev: VfioPciDevice) -> None:
    """``vfio_bar_restore()``: rewrite the real BARs after a reset the kernel did not see."""
    for i in range(6):
        vfio_user_config_write(vdev, R.PCI_BASE_ADDRESS_0 + 4 * i, vdev.rbar[i], 4)
    vfio_user_config_write(vdev, R.PCI_ROM_ADDRESS, vdev.rbar[6], 4)
    vdev.machine.log(f"vfio-pci {vdev.name}: reset recovery - restoring bars")


def vfio_basic_config_write(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                            offset: int, val: int) -> int:
    """``vfio_basic_config_write()``.

    Command register: every bit but INTx disable goes to the device (memory space and bus
    master take effect); the memory/io enable bits are remembered in vconfig (BAR accesses
    test the virtual memory bit, ``__vfio_pci_memory_enabled``).  INTx disable is virtual:
    setting it masks INTx, clearing it unmasks (SPEC §11.2, §11.5).
    """
    new_cmd = 0
    if offset == R.PCI_COMMAND:
        phys_cmd = vfio_user_config_read(vdev, R.PCI_COMMAND, 2)
        virt_cmd = _le(vdev.vconfig, R.PCI_COMMAND, 2)
        new_cmd = val & 0xFFFF
        phys_io = bool(phys_cmd & R.PCI_COMMAND_IO)
        virt_io = bool(virt_cmd & R.PCI_COMMAND_IO)
        new_io = bool(new_cmd & R.PCI_COMMAND_IO)
        phys_mem = bool(phys_cmd & R.PCI_COMMAND_MEMORY)
        virt_mem = bool(virt_cmd & R.PCI_COMMAND_MEMORY)
        new_mem = bool(new_cmd & R.PCI_COMMAND_MEMORY)
        if ((new_mem and virt_mem and not phys_mem) or (new_io and virt_io and not phys_io)
                or vfio_need_bar_restore(vdev)):
            vfio_bar_restore(vdev)

    count = vfio_default_config_write(vdev, pos, count, perm, offset, val)

    if offset == R.PCI_COMMAND:
        mask = R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_IO
        virt_cmd = _le(vdev.vconfig, R.PCI_COMMAND, 2)
        virt_cmd = (virt_cmd & ~mask) | (new_cmd & mask)
        vdev.vconfig[R.PCI_COMMAND:R.PCI_COMMAND + 2] = virt_cmd.to_bytes(2, "little")

    # Emulate INTx disable
    if R.PCI_COMMAND <= offset <= R.PCI_COMMAND + 1:
        virt_intx_disable = bool(_le(vdev.vconfig, R.PCI_COMMAND, 2)
                                 & R.PCI_COMMAND_INTX_DISABLE)
        if virt_intx_disable and not vdev.virq_disabled:
            vdev.virq_disabled = True
            intrs.vfio_pci_intx_mask(vdev)
        elif not virt_intx_disable and vdev.virq_disabled:
            vdev.virq_disabled = False
            intrs.vfio_pci_intx_unmask(vdev)

    if is_bar(offset):
        vdev.bardirty = True
    return count


def init_pci_cap_basic_perm() -> PermBits:
    """``init_pci_cap_basic_perm()``: the 64-byte standard header."""
    perm = alloc_perm_bits(R.PCI_STD_HEADER_SIZEOF)
    perm.readfn = vfio_basic_config_read
    perm.writefn = vfio_basic_config_write
    # Virtualized for SR-IOV functions, which just have FFFF
    p_setw(perm, R.PCI_VENDOR_ID, ALL_VIRT, NO_WRITE)
    p_setw(perm, R.PCI_DEVICE_ID, ALL_VIRT, NO_WRITE)
    # Virtualize INTx disable, used internally for interrupt control
    p_setw(perm, R.PCI_COMMAND, R.PCI_COMMAND_INTX_DISABLE, ALL_WRITE)
    # Virtualize capability list, we might want to skip/disable
    p_setw(perm, R.PCI_STATUS, R.PCI_STATUS_CAP_LIST, NO_WRITE)
    # No harm to write
    p_setb(perm, R.PCI_CACHE_LINE_SIZE, NO_VIRT, ALL_WRITE)
    p_setb(perm, R.PCI_LATENCY_TIMER, NO_VIRT, ALL_WRITE)
    p_setb(perm, R.PCI_BIST, NO_VIRT, ALL_WRITE)
    # Virtualize all bars, can't touch the real ones
    for i in range(6):
        p_setd(perm, R.PCI_BASE_ADDRESS_0 + 4 * i, ALL_VIRT, ALL_WRITE)
    p_setd(perm, R.PCI_ROM_ADDRESS, ALL_VIRT, ALL_WRITE)
    # Allow us to adjust capability chain
    p_setb(perm, R.PCI_CAPABILITY_LIST, ALL_VIRT, NO_WRITE)
    # Sometimes used by sw, just virtualize
    p_setb(perm, R.PCI_INTERRUPT_LINE, ALL_VIRT, ALL_WRITE)
    # Virtualize interrupt pin to allow hiding INTx
    p_setb(perm, R.PCI_INTERRUPT_PIN, ALL_VIRT, NO_WRITE)
    return perm


# ---------------------------------------------------------------------------------------------
# Power management, PCI Express


def vfio_pm_config_write(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                         offset: int, val: int) -> int:
    """``vfio_pm_config_write()``: the power state bits are trapped and set by the kernel
    (``vfio_lock_and_set_power_state`` -> ``vfio_pci_set_power_state``), which saves the
    device's state on the way into D3hot and restores it on the way back to D0."""
    count = vfio_default_config_write(vdev, pos, count, perm, offset, val)
    if offset == R.PCI_PM_CTRL:
        vdev.set_power_state(val & R.PCI_PM_CTRL_STATE_MASK)
    return count


def init_pci_cap_pm_perm() -> PermBits:
    """``init_pci_cap_pm_perm()``."""
    perm = alloc_perm_bits(R.PCI_PM_SIZEOF)
    perm.writefn = vfio_pm_config_write
    # We always virtualize the next field so we can remove capabilities from the chain.
    p_setb(perm, R.PCI_CAP_LIST_NEXT, ALL_VIRT, NO_WRITE)
    # Power state bits are read-only: the change is trapped (vfio_pm_config_write).
    p_setd(perm, R.PCI_PM_CTRL, NO_VIRT, ~R.PCI_PM_CTRL_STATE_MASK)
    return perm


def vfio_exp_config_write(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                          offset: int, val: int) -> int:
    """``vfio_exp_config_write()``: FLR is virtual and triggers a function reset if the
    device has FLR; MRRS writes reach the device (never below the device's MPS)."""
    start = pos - offset
    ctrl_off = start + R.PCI_EXP_DEVCTL
    readrq = _le(vdev.vconfig, ctrl_off, 2) & R.PCI_EXP_DEVCTL_READRQ
    count = vfio_default_config_write(vdev, pos, count, perm, offset, val)
    ctrl = _le(vdev.vconfig, ctrl_off, 2)
    if ctrl & R.PCI_EXP_DEVCTL_BCR_FLR:
        ctrl &= ~R.PCI_EXP_DEVCTL_BCR_FLR
        vdev.vconfig[ctrl_off:ctrl_off + 2] = ctrl.to_bytes(2, "little")
        cap = vfio_user_config_read(vdev, start + R.PCI_EXP_DEVCAP, 4)
        if cap & R.PCI_EXP_DEVCAP_FLR:
            vdev.try_reset_function()
    if readrq != (ctrl & R.PCI_EXP_DEVCTL_READRQ):
        # pcie_set_readrq(max(requested, mps)): both encoded as 128 << field.
        rq = (ctrl & R.PCI_EXP_DEVCTL_READRQ) >> 12
        phys = vfio_user_config_read(vdev, ctrl_off, 2)
        mps = (phys & R.PCI_EXP_DEVCTL_PAYLOAD) >> 5
        rq = max(rq, mps)
        phys = (phys & ~R.PCI_EXP_DEVCTL_READRQ) | (rq << 12)
        vfio_user_config_write(vdev, ctrl_off, phys, 2)
    return count


def init_pci_cap_exp_perm() -> PermBits:
    """``init_pci_cap_exp_perm()``: the largest (v2 endpoint) layout."""
    perm = alloc_perm_bits(R.PCI_CAP_EXP_ENDPOINT_SIZEOF_V2)
    perm.writefn = vfio_exp_config_write
    p_setb(perm, R.PCI_CAP_LIST_NEXT, ALL_VIRT, NO_WRITE)
    # Allow writes to device control fields, except devctl_phantom, which could confuse the
    # IOMMU, MPS, which can break communication with other physical devices, and the ARI bit
    # in devctl2, which is set at probe time.  FLR and MRRS get virtualized via the writefn.
    p_setw(perm, R.PCI_EXP_DEVCTL,
           R.PCI_EXP_DEVCTL_BCR_FLR | R.PCI_EXP_DEVCTL_PAYLOAD | R.PCI_EXP_DEVCTL_READRQ,
           ~R.PCI_EXP_DEVCTL_PHANTOM)
    p_setw(perm, R.PCI_EXP_DEVCTL2, NO_VIRT, ~R.PCI_EXP_DEVCTL2_ARI)
    return perm


# ---------------------------------------------------------------------------------------------
# MSI


def vfio_find_cap_start(vdev: VfioPciDevice, pos: int) -> int:
    """``vfio_find_cap_start()``: first byte of the capability that owns ``pos``."""
    base = R.PCI_CFG_SPACE_SIZE if pos >= R.PCI_CFG_SPACE_SIZE else R.PCI_STD_HEADER_SIZEOF
    cap = vdev.pci_config_map[pos]
    if cap == PCI_CAP_ID_BASIC:
        return 0
    while pos - 1 >= base and vdev.pci_config_map[pos - 1] == cap:
        pos -= 1
    return pos


def vfio_msi_config_read(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                         offset: int) -> int:
    """``vfio_msi_config_read()``.

    quirk: the kernel refreshes "max available queue size" at ``vconfig[start]`` -- the
    capability's id/next word, not its control word -- with ``PCI_MSI_FLAGS_QMASK``, which
    only touches bits 3:1 of the id byte.  The id byte is not virtual, so the user never
    sees it; the model does the same store.
    """
    if offset <= R.PCI_MSI_FLAGS and offset + count >= R.PCI_MSI_FLAGS:
        start = vfio_find_cap_start(vdev, pos)
        flags = _le(vdev.vconfig, start, 2)
        flags &= ~R.PCI_MSI_FLAGS_QMASK
        flags |= vdev.msi_qmax << 1
        vdev.vconfig[start:start + 2] = (flags & 0xFFFF).to_bytes(2, "little")
    return vfio_default_config_read(vdev, pos, count, perm, offset)


def vfio_msi_config_write(vdev: VfioPciDevice, pos: int, count: int, perm: PermBits,
                          offset: int, val: int) -> int:
    """``vfio_msi_config_write()``: the control byte is virtual; after the store, Enable is
    forced off unless MSI is enabled through SET_IRQS and Multiple Message Enable is clamped
    to ``msi_qmax``; the result is written to vconfig and to the device."""
    count = vfio_default_config_write(vdev, pos, count, perm, offset, val)
    if offset <= R.PCI_MSI_FLAGS and offset + count >= R.PCI_MSI_FLAGS:
        start = vfio_find_cap_start(vdev, pos)
        off = start + R.PCI_MSI_FLAGS
        flags = _le(vdev.vconfig, off, 2)
        # MSI is enabled via ioctl
        if not intrs.is_msi(vdev):
            flags &= ~R.PCI_MSI_FLAGS_ENABLE
        # Check queue size
        if (flags & R.PCI_MSI_FLAGS_QSIZE) >> 4 > vdev.msi_qmax:
            flags &= ~R.PCI_MSI_FLAGS_QSIZE
            flags |= vdev.msi_qmax << 4
        vdev.vconfig[off:off + 2] = flags.to_bytes(2, "little")
        vfio_user_config_write(vdev, off, flags, 2)
    return count


def init_pci_cap_msi_perm(length: int, flags: int) -> PermBits:
    """``init_pci_cap_msi_perm()``: per device, the layout depends on the control word.

    MSI capability layouts (PCI Local Bus Spec 3.0, 6.8.1)::

        32-bit:                         64-bit (edu):
        dw  byte                        dw  byte
         0  0x00  id | next | control    0  0x00  id | next | control
         1  0x04  address                1  0x04  address (low)
         2  0x08  data                   2  0x08  address (high)
        (3  0x0C  mask, 4 0x10 pending)  3  0x0C  data
                                        (4  0x10  mask, 5 0x14 pending)
    """
    perm = alloc_perm_bits(length)
    perm.readfn = vfio_msi_config_read
    perm.writefn = vfio_msi_config_write
    p_setb(perm, R.PCI_CAP_LIST_NEXT, ALL_VIRT, NO_WRITE)
    # The upper byte of the control register is reserved, just setup the lower byte.
    p_setb(perm, R.PCI_MSI_FLAGS, ALL_VIRT, ALL_WRITE)
    p_setd(perm, R.PCI_MSI_ADDRESS_LO, ALL_VIRT, ALL_WRITE)
    if flags & R.PCI_MSI_FLAGS_64BIT:
        p_setd(perm, R.PCI_MSI_ADDRESS_HI, ALL_VIRT, ALL_WRITE)
        p_setw(perm, R.PCI_MSI_DATA_64, ALL_VIRT, ALL_WRITE)
        if flags & R.PCI_MSI_FLAGS_MASKBIT:
            p_setd(perm, R.PCI_MSI_MASK_64, NO_VIRT, ALL_WRITE)
            p_setd(perm, R.PCI_MSI_PENDING_64, NO_VIRT, ALL_WRITE)
    else:
        p_setw(perm, R.PCI_MSI_DATA_32, ALL_VIRT, ALL_WRITE)
        if flags & R.PCI_MSI_FLAGS_MASKBIT:
            p_setd(perm, R.PCI_MSI_MASK_32, NO_VIRT, ALL_WRITE)
            p_setd(perm, R.PCI_MSI_PENDING_32, NO_VIRT, ALL_WRITE)
    return perm


def vfio_msi_cap_len(vdev: VfioPciDevice, pos: int) -> int:
    """``vfio_msi_cap_len()``: 10 bytes, +4 for a 64-bit address, +10 for masking."""
    flags = vfio_user_config_read(vdev, pos + R.PCI_MSI_FLAGS, 2)
    length = 10
    if flags & R.PCI_MSI_FLAGS_64BIT:
        length += 4
    if flags & R.PCI_MSI_FLAGS_MASKBIT:
        length += 10
    if vdev.msi_perm is None:
        vdev.msi_perm = init_pci_cap_msi_perm(length, flags)
    return length


# ---------------------------------------------------------------------------------------------
# The tables


def _direct_perm() -> PermBits:
    # Default capability regions: read-only, no virtualization (readfn direct, no writefn).
    return PermBits(readfn=vfio_direct_config_read)


#: ``cap_perms[]``: capabilities without an entry read directly and drop writes.
cap_perms: dict[int, PermBits] = {
    PCI_CAP_ID_BASIC: init_pci_cap_basic_perm(),
    R.PCI_CAP_ID_PM: init_pci_cap_pm_perm(),
    R.PCI_CAP_ID_EXP: init_pci_cap_exp_perm(),
    # R.PCI_CAP_ID_MSIX: no table -- "only written via ioctl"
    R.PCI_CAP_ID_VNDR: PermBits(readfn=vfio_direct_config_read,
                                writefn=vfio_raw_config_write),
}

#: ``pci_cap_length[]``: fixed lengths; 0xFF variable (computed); absent / 0: hidden.
pci_cap_length: dict[int, int] = {
    PCI_CAP_ID_BASIC: R.PCI_STD_HEADER_SIZEOF,
    R.PCI_CAP_ID_PM: R.PCI_PM_SIZEOF,
    R.PCI_CAP_ID_MSI: 0xFF,
    R.PCI_CAP_ID_VNDR: 0xFF,
    R.PCI_CAP_ID_EXP: 0xFF,
    R.PCI_CAP_ID_MSIX: R.PCI_CAP_MSIX_SIZEOF,
}


def cap_perm(vdev: VfioPciDevice, cap_id: int) -> PermBits:
    if cap_id == R.PCI_CAP_ID_MSI and vdev.msi_perm is not None:
        return vdev.msi_perm
    return cap_perms.get(cap_id) or _DIRECT


_DIRECT = _direct_perm()


def vfio_cap_len(vdev: VfioPciDevice, cap: int, pos: int) -> int:
    """``vfio_cap_len()``: variable-length capabilities."""
    if cap == R.PCI_CAP_ID_MSI:
        return vfio_msi_cap_len(vdev, pos)
    if cap == R.PCI_CAP_ID_VNDR:
        # length follows the next field
        return vfio_user_config_read(vdev, pos + R.PCI_CAP_FLAGS, 1)
    if cap == R.PCI_CAP_ID_EXP:
        if vdev.cfg_size > R.PCI_CFG_SPACE_SIZE:
            # Test for extended capabilities
            vdev.extended_caps = vfio_user_config_read(vdev, R.PCI_CFG_SPACE_SIZE, 4) != 0
        exp_flags = vfio_user_config_read(vdev, pos + R.PCI_EXP_FLAGS, 2)
        rc_end = ((exp_flags & R.PCI_EXP_FLAGS_TYPE) >> 4) == R.PCI_EXP_TYPE_RC_END
        if (exp_flags & R.PCI_EXP_FLAGS_VERS) == 1:
            return 0xC if rc_end else R.PCI_CAP_EXP_ENDPOINT_SIZEOF_V1
        return 0x2C if rc_end else R.PCI_CAP_EXP_ENDPOINT_SIZEOF_V2
    vdev.machine.log(f"vfio-pci {vdev.name}: unknown length for pci cap {cap:#x}@{pos:#x}")
    return 0


def vfio_fill_vconfig_bytes(vdev: VfioPciDevice, offset: int, size: int) -> None:
    """``vfio_fill_vconfig_bytes()``: copy device config into vconfig, dword first."""
    while size:
        if size >= 4 and not offset % 4:
            n = 4
        elif size >= 2 and not offset % 2:
            n = 2
        else:
            n = 1
        vdev.vconfig[offset:offset + n] = vfio_user_config_read(vdev, offset, n).to_bytes(
            n, "little")
        offset += n
        size -= n


def vfio_cap_init(vdev: VfioPciDevice) -> None:
    """``vfio_cap_init()``: walk the capability list, claim each capability's bytes."""
    cmap = vdev.pci_config_map
    status = vfio_user_config_read(vdev, R.PCI_STATUS, 2)
    if not status & R.PCI_STATUS_CAP_LIST:
        return
    pos = vfio_user_config_read(vdev, R.PCI_CAPABILITY_LIST, 1)
    prev = R.PCI_CAPABILITY_LIST  # vconfig offset of the pointer to this capability
    caps = 0
    loops = (R.PCI_CFG_SPACE_SIZE - R.PCI_STD_HEADER_SIZEOF) // R.PCI_CAP_SIZEOF
    while pos and loops:
        loops -= 1
        cap = vfio_user_config_read(vdev, pos, 1)
        nxt = vfio_user_config_read(vdev, pos + R.PCI_CAP_LIST_NEXT, 1)
        length = 0
        # ID 0 is a NULL capability, conflicting with PCI_CAP_ID_BASIC: hidden.
        if cap and cap <= R.PCI_CAP_ID_MAX:
            length = pci_cap_length.get(cap, 0)
            if length == 0xFF:
                length = vfio_cap_len(vdev, cap, pos)
        if not length:
            vdev.machine.log(f"vfio-pci {vdev.name}: hiding cap {cap:#x}")
            vdev.vconfig[prev] = nxt
            pos = nxt
            continue
        for i in range(length):
            if cmap[pos + i] != PCI_CAP_ID_INVALID:
                vdev.machine.log(f"vfio-pci {vdev.name}: pci config conflict @{pos + i:#x}, "
                                 f"was cap {cmap[pos + i]:#x} now cap {cap:#x}")
        cmap[pos:pos + length] = bytes([cap]) * length
        vfio_fill_vconfig_bytes(vdev, pos, length)
        prev = pos + R.PCI_CAP_LIST_NEXT
        pos = nxt
        caps += 1
    if not caps:
        st = _le(vdev.vconfig, R.PCI_STATUS, 2) & ~R.PCI_STATUS_CAP_LIST
        vdev.vconfig[R.PCI_STATUS:R.PCI_STATUS + 2] = st.to_bytes(2, "little")


def vfio_ecap_init(vdev: VfioPciDevice) -> None:
    """``vfio_ecap_init()``, for a model that knows no extended capability lengths.

    The kernel shows the extended capabilities it has a length for and hides the others.
    The preset devices have no extended capabilities (dword 0x100 reads 0), so the table of
    lengths is empty here: any extended capability a machine file's device might report is
    hidden the way the kernel hides an unknown one (first one kept as a placeholder with id
    and version cleared, later ones skipped in the chain).
    """
    if not vdev.extended_caps:
        return
    cmap = vdev.pci_config_map
    epos = R.PCI_CFG_SPACE_SIZE
    loops = (vdev.cfg_size - R.PCI_CFG_SPACE_SIZE) // R.PCI_CAP_SIZEOF
    prev: int | None = None
    ecaps = 0
    while loops and epos >= R.PCI_CFG_SPACE_SIZE:
        loops -= 1
        header = vfio_user_config_read(vdev, epos, 4)
        ecap = header & 0xFFFF
        nxt = (header >> 20) & 0xFFC
        if prev is not None:
            # If not the first in the chain, we can skip over it.
            pv = _le(vdev.vconfig, prev, 4) & ~(0xFFC << 20)
            pv |= nxt << 20
            vdev.vconfig[prev:prev + 4] = pv.to_bytes(4, "little")
            epos = nxt
            continue
        # Otherwise, fill in a placeholder; the direct readfn virtualizes its header.
        cmap[epos:epos + 4] = bytes([ecap & 0xFF]) * 4
        vfio_fill_vconfig_bytes(vdev, epos, 4)
        hv = _le(vdev.vconfig, epos, 4) & (0xFFC << 20)
        vdev.vconfig[epos:epos + 4] = hv.to_bytes(4, "little")
        prev = epos
        epos = nxt
    if not ecaps:
        vdev.vconfig[R.PCI_CFG_SPACE_SIZE:R.PCI_CFG_SPACE_SIZE + 4] = bytes(4)


def vfio_config_init(vdev: VfioPciDevice) -> None:
    """``vfio_config_init()``: build ``pci_config_map`` and ``vconfig`` from the device."""
    size = vdev.cfg_size
    vdev.pci_config_map = bytearray([PCI_CAP_ID_INVALID]) * size
    vdev.pci_config_map[:R.PCI_STD_HEADER_SIZEOF] = bytes(R.PCI_STD_HEADER_SIZEOF)
    vdev.vconfig = bytearray(size)
    vdev.msi_perm = None
    vdev.extended_caps = False
    vfio_fill_vconfig_bytes(vdev, 0, R.PCI_STD_HEADER_SIZEOF)
    vdev.bardirty = True
    # For restore after reset
    vdev.rbar = [_le(vdev.vconfig, R.PCI_BASE_ADDRESS_0 + 4 * i, 4) for i in range(6)]
    vdev.rbar.append(_le(vdev.vconfig, R.PCI_ROM_ADDRESS, 4))
    vfio_cap_init(vdev)
    vfio_ecap_init(vdev)


def vfio_config_free(vdev: VfioPciDevice) -> None:
    """``vfio_config_free()``."""
    vdev.vconfig = bytearray()
    vdev.pci_config_map = bytearray()
    vdev.msi_perm = None


# ---------------------------------------------------------------------------------------------
# The config region


def vfio_pci_cap_remaining_dword(vdev: VfioPciDevice, pos: int) -> int:
    """Bytes left in this dword that belong to the same owner as ``pos``."""
    cap = vdev.pci_config_map[pos]
    i = 1
    while (pos + i) % 4 and vdev.pci_config_map[pos + i] == cap:
        i += 1
    return i


def vfio_config_do_rw(vdev: VfioPciDevice, buf: bytearray, done: int, count: int, pos: int,
                      iswrite: bool) -> int:
    """``vfio_config_do_rw()``: one aligned piece of at most a dword inside one owner.

    ``buf[done:]`` is the user's data (write) or receives it (read).  Returns the piece size.
    """
    if pos < 0 or pos >= vdev.cfg_size or pos + count > vdev.cfg_size:
        raise kerr(errno.EFAULT)
    count = min(count, vfio_pci_cap_remaining_dword(vdev, pos))
    if count >= 4 and not pos % 4:
        count = 4
    elif count >= 2 and not pos % 2:
        count = 2
    else:
        count = 1

    cap_id = vdev.pci_config_map[pos]
    cap_start = 0
    if cap_id == PCI_CAP_ID_INVALID:
        perm = unassigned_perms
        cap_start = pos
    elif cap_id == PCI_CAP_ID_INVALID_VIRT:
        perm = virt_perms
        cap_start = pos
    elif pos >= R.PCI_CFG_SPACE_SIZE:
        perm = _DIRECT  # ecap_perms: every extended capability is hidden (vfio_ecap_init)
        cap_start = vfio_find_cap_start(vdev, pos)
    else:
        perm = cap_perm(vdev, cap_id)
        if cap_id > PCI_CAP_ID_BASIC:
            cap_start = vfio_find_cap_start(vdev, pos)
    offset = pos - cap_start

    if iswrite:
        if perm.writefn is None:
            return count
        val = _le(buf, done, count)
        return perm.writefn(vdev, pos, count, perm, offset, val)
    val = 0
    if perm.readfn is not None:
        val = perm.readfn(vdev, pos, count, perm, offset)
    buf[done:done + count] = (val & _mask(count)).to_bytes(count, "little")
    return count


def vfio_pci_config_rw(vdev: VfioPciDevice, buf: bytearray, pos: int, iswrite: bool) -> int:
    """``vfio_pci_config_rw()``: the whole access, piece by piece.

    The bounds check of the first piece covers the whole access (``pos + count`` beyond the
    config space is EFAULT, nothing is truncated); an error part-way returns the error, as
    the kernel does, with the earlier pieces already done.
    """
    count = len(buf)
    done = 0
    while count:
        n = vfio_config_do_rw(vdev, buf, done, count, pos, iswrite)
        count -= n
        done += n
        pos += n
    return done
