"""A PCI function: its own configuration space, BARs, interrupts and DMA.

docs/architecture.md §6. This is the hardware side only: what vfio-pci passes through to the
device (SPEC §11.2 says which fields vfio-pci virtualises; that is kernel/pci/config.py's
job). Hardware rules, before the code:

* Configuration space is stored with a per-byte write mask and a per-byte RW1C mask (QEMU
  keeps ``wmask``/``w1cmask`` the same way); every partial write goes through
  :func:`byte_mask_update`. Capabilities decode their own registers (hw/pci/caps.py); bytes of
  a dword past a capability's length belong to the function's storage.
* Command register: Memory Space gates BAR decoding (a BAR access with it clear is dropped:
  reads all-ones, logged), Bus Master gates DMA *and* MSI (SPEC §11.1, decision D17: dropped
  and logged), INTx Disable keeps the pin deasserted while the function's INTx level and
  Status.Interrupt Status (bit 3) keep following the device.
* MSI is only a memory write: :meth:`PciFunction.send_msi` is a 4-byte DMA write of the
  message data to the message address through ``machine.iommu.translate`` like any DMA
  (SPEC §9). A masked vector (MSI-X entry or function mask, MSI per-vector mask) sets its
  pending bit instead; unmasking sends it.
* DMA: Bus Master check, then ``machine.iommu.translate(rid, iova, size, write)`` for the
  whole transfer, then ``machine.bus``. A fault moves no byte, hands a
  ``hw.iommu.FaultRecord`` to ``machine.record_fault`` (which keeps it in ``machine.faults``)
  and returns None/False.
* :meth:`PciFunction.reset` is a conventional reset: power-on state, BARs and interrupt line
  as firmware left them (the model folds the firmware's assignment into power-on). The
  kernel's save/restore around a reset (``pci_reset_function``) is
  :meth:`PciFunction.reset_function`.

Subclasses (the device models) give the identity to ``__init__``, add capabilities with
:meth:`add_cap`, and implement ``bar_mmio_read``/``bar_mmio_write`` (the device decides which
access sizes it accepts) and ``reset_device``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from vfiosim.hw.iommu import FaultRecord, IommuFault
from vfiosim.hw.pci.bar import Bar
from vfiosim.hw.pci.caps import MsiCapability, MsixCapability, PciCap
from vfiosim.hw.pci.util import byte_mask_update, size_to_be, w1c_update
from vfiosim.uapi.pci_regs import (
    PCI_BASE_ADDRESS_0,
    PCI_CACHE_LINE_SIZE,
    PCI_CAPABILITY_LIST,
    PCI_CFG_SPACE_EXP_SIZE,
    PCI_CFG_SPACE_SIZE,
    PCI_CLASS_PROG,
    PCI_COMMAND,
    PCI_COMMAND_INTX_DISABLE,
    PCI_COMMAND_IO,
    PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY,
    PCI_COMMAND_PARITY,
    PCI_COMMAND_SERR,
    PCI_DEVICE_ID,
    PCI_INTERRUPT_LINE,
    PCI_INTERRUPT_PIN,
    PCI_LATENCY_TIMER,
    PCI_REVISION_ID,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
    PCI_STATUS_DETECTED_PARITY,
    PCI_STATUS_INTERRUPT,
    PCI_STATUS_PARITY,
    PCI_STATUS_REC_MASTER_ABORT,
    PCI_STATUS_REC_TARGET_ABORT,
    PCI_STATUS_SIG_SYSTEM_ERROR,
    PCI_STATUS_SIG_TARGET_ABORT,
    PCI_STD_HEADER_SIZEOF,
    PCI_STD_NUM_BARS,
    PCI_SUBSYSTEM_ID,
    PCI_SUBSYSTEM_VENDOR_ID,
    PCI_VENDOR_ID,
    PciCapId,
)

__all__ = ["Bar", "MsiKind", "PciFunction", "PciSavedState", "byte_mask_update"]

MsiKind = Literal["msi", "msix"] | None
IntxCallback = Callable[[bool], None]

_STATUS_W1C = (
    PCI_STATUS_PARITY
    | PCI_STATUS_SIG_TARGET_ABORT
    | PCI_STATUS_REC_TARGET_ABORT
    | PCI_STATUS_REC_MASTER_ABORT
    | PCI_STATUS_SIG_SYSTEM_ERROR
    | PCI_STATUS_DETECTED_PARITY
)


@dataclass
class PciSavedState:
    """What ``pci_save_state`` keeps: the header dwords and the MSI/MSI-X programming."""

    header: list[int]
    msi: tuple[bool, int, int, int, int] | None
    msix: tuple[bool, bool, list[list[int]]] | None
    msgs: dict[int, tuple[int, int]] = field(default_factory=dict)


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for phys, n in ranges:
        if out and out[-1][0] + out[-1][1] == phys:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((phys, n))
    return out


class PciFunction:
    """One simulated PCI function (docs/architecture.md §6).

    ``machine`` provides ``bus``, ``iommu``, ``clock``, ``record_fault``, ``log``; ``name`` is the
    BDF ("0000:01:00.0"); ``rid`` the requester identity the IOMMU uses (x86: the BDF-based
    id, PAMU: the LIODN of the PCIe controller). ``class_code`` is the 24-bit class (base
    class << 16 | subclass << 8 | prog-if). ``bar_addresses`` and ``interrupt_line`` are what
    firmware programmed.
    """

    def __init__(
        self,
        machine: Any,
        name: str,
        rid: int,
        *,
        vendor: int,
        device: int,
        revision: int = 0,
        class_code: int = 0,
        subsystem_vendor: int = 0,
        subsystem: int = 0,
        bars: list[Bar] | None = None,
        bar_addresses: dict[int, int] | None = None,
        interrupt_pin: int = 0,
        interrupt_line: int = 0,
        pcie: bool = False,
    ) -> None:
        self.machine = machine
        self.name = name
        self.rid = rid
        self.cfg_size = PCI_CFG_SPACE_EXP_SIZE if pcie else PCI_CFG_SPACE_SIZE
        self.config = bytearray(self.cfg_size)
        self._wmask = bytearray(self.cfg_size)
        self._w1cmask = bytearray(self.cfg_size)
        self.caps: list[PciCap] = []
        self._cap_dwords: dict[int, PciCap] = {}
        self.msi_cap: MsiCapability | None = None
        self.msix_cap: MsixCapability | None = None
        bars = list(bars or [])
        self.bars: list[Bar] = bars + [Bar() for _ in range(PCI_STD_NUM_BARS - len(bars))]
        self._intx_level = False
        self._intx_pin = False
        self._intx_cb: IntxCallback | None = None
        self._msgs: dict[int, tuple[int, int]] = {}  # vector -> (address, data) programmed
        self.dma_faults = 0
        self.dropped_msis = 0
        self.interrupt_pin = interrupt_pin

        self._put(PCI_VENDOR_ID, 2, vendor)
        self._put(PCI_DEVICE_ID, 2, device)
        self._put(PCI_REVISION_ID, 1, revision)
        self._put(PCI_CLASS_PROG, 3, class_code)
        self._put(PCI_SUBSYSTEM_VENDOR_ID, 2, subsystem_vendor)
        self._put(PCI_SUBSYSTEM_ID, 2, subsystem)
        self._put(PCI_INTERRUPT_PIN, 1, interrupt_pin)
        self._put(PCI_INTERRUPT_LINE, 1, interrupt_line)
        cmd_w = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_PARITY | PCI_COMMAND_SERR
        cmd_w |= PCI_COMMAND_INTX_DISABLE
        if any(b.implemented and not b.mem for b in self.bars):
            cmd_w |= PCI_COMMAND_IO
        self._put(PCI_COMMAND, 2, cmd_w, self._wmask)
        self._put(PCI_STATUS, 2, _STATUS_W1C, self._w1cmask)
        self._put(PCI_CACHE_LINE_SIZE, 1, 0xFF, self._wmask)
        if not pcie:  # PCIe: the Latency Timer is read-only zero
            self._put(PCI_LATENCY_TIMER, 1, 0xFF, self._wmask)
        self._put(PCI_INTERRUPT_LINE, 1, 0xFF, self._wmask)
        addrs = bar_addresses or {}
        i = 0
        while i < PCI_STD_NUM_BARS:
            bar = self.bars[i]
            off = PCI_BASE_ADDRESS_0 + 4 * i
            if bar.implemented:
                addr = addrs.get(i, 0) & bar.wmask()
                width = 8 if bar.is64 else 4
                self._put(off, width, addr | bar.flags())
                self._put(off, width, bar.wmask(), self._wmask)
                if bar.is64:
                    i += 1
            i += 1
        self._power_on: bytes = b""  # taken by finalize()

    # -- construction helpers ----------------------------------------------------------

    def _put(self, offset: int, size: int, value: int, where: bytearray | None = None) -> None:
        (self.config if where is None else where)[offset : offset + size] = value.to_bytes(
            size, "little"
        )

    def set_writable(self, start: int, end: int) -> None:
        """Make config bytes ``[start, end)`` plain read/write storage (device-specific)."""
        self._wmask[start:end] = b"\xff" * (end - start)

    def add_cap(self, cap: PciCap, offset: int) -> PciCap:
        """Link ``cap`` at ``offset`` (dword aligned, in the standard config space) at the end
        of the capability list."""
        if offset % 4 or offset < PCI_STD_HEADER_SIZEOF or offset + cap.length > 0x100:
            raise ValueError(f"bad capability offset 0x{offset:x}")
        cap.offset = offset
        cap.function = self
        if self.caps:
            self.caps[-1].next = offset
        else:
            self._put(PCI_CAPABILITY_LIST, 1, offset)
            status = int.from_bytes(self.config[PCI_STATUS : PCI_STATUS + 2], "little")
            self._put(PCI_STATUS, 2, status | PCI_STATUS_CAP_LIST)
        self.caps.append(cap)
        for idx in range(offset // 4, (offset + cap.length + 3) // 4):
            if idx in self._cap_dwords:
                raise ValueError(f"capability at 0x{offset:x} overlaps another")
            self._cap_dwords[idx] = cap
            # the capability's bytes are its own; storage under them is not writable
            lo, hi = 4 * idx, min(4 * idx + 4, offset + cap.length)
            self._wmask[max(lo, offset) : hi] = bytes(hi - max(lo, offset))
        if isinstance(cap, MsiCapability):
            self.msi_cap = cap
        if isinstance(cap, MsixCapability):
            self.msix_cap = cap
        return cap

    def finalize(self) -> None:
        """Record the power-on image of config space (call at the end of ``__init__``)."""
        self._power_on = bytes(self.config)

    # -- configuration space -------------------------------------------------------------

    def _cap_lanes(self, cap: PciCap, idx: int) -> int:
        be = 0
        for lane in range(4):
            if cap.offset <= 4 * idx + lane < cap.offset + cap.length:
                be |= 1 << lane
        return be

    def _read_dword(self, idx: int) -> int:
        off = 4 * idx
        val = int.from_bytes(self.config[off : off + 4], "little")
        cap = self._cap_dwords.get(idx)
        if cap is not None:
            lanes = self._cap_lanes(cap, idx)
            val = byte_mask_update(val, lanes, cap.read_register(idx - cap.offset // 4))
        if off == PCI_COMMAND and self._intx_level:
            val |= PCI_STATUS_INTERRUPT << 16
        return val

    def _write_dword(self, idx: int, be: int, value: int) -> None:
        off = 4 * idx
        cap = self._cap_dwords.get(idx)
        if cap is not None:
            lanes = self._cap_lanes(cap, idx)
            if be & lanes:
                cap.write_register(idx - cap.offset // 4, value, be & lanes)
            be &= ~lanes
        if not be:
            return
        old = int.from_bytes(self.config[off : off + 4], "little")
        wmask = int.from_bytes(self._wmask[off : off + 4], "little")
        w1c = int.from_bytes(self._w1cmask[off : off + 4], "little")
        new = w1c_update(byte_mask_update(old, be, value, wmask), be, value, w1c)
        self.config[off : off + 4] = new.to_bytes(4, "little")
        if off == PCI_COMMAND and (old ^ new) & 0xFFFF:
            self._update_intx_pin()

    def cfg_read(self, offset: int, size: int) -> int:
        """Read 1, 2 or 4 bytes of the function's own config space (little-endian)."""
        if size not in (1, 2, 4) or offset < 0 or offset + size > self.cfg_size:
            self.machine.log(f"{self.name}: config read 0x{offset:x}/{size} out of range")
            return (1 << (8 * max(size, 0))) - 1
        if (offset & 3) + size <= 4:
            dword = self._read_dword(offset >> 2)
            return (dword >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)
        return sum(self.cfg_read(offset + i, 1) << (8 * i) for i in range(size))

    def cfg_write(self, offset: int, size: int, value: int) -> None:
        """Write 1, 2 or 4 bytes; read-only bits keep their value, RW1C bits clear on 1."""
        if size not in (1, 2, 4) or offset < 0 or offset + size > self.cfg_size:
            self.machine.log(f"{self.name}: config write 0x{offset:x}/{size} out of range")
            return
        if (offset & 3) + size <= 4:
            shift = 8 * (offset & 3)
            self._write_dword(offset >> 2, size_to_be(offset, size), value << shift)
            return
        for i in range(size):
            self.cfg_write(offset + i, 1, (value >> (8 * i)) & 0xFF)

    def find_cap(self, cap_id: int) -> int:
        """Offset of the first capability with ``cap_id`` in the list, 0 if none."""
        if not self.cfg_read(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST:
            return 0
        pos = self.cfg_read(PCI_CAPABILITY_LIST, 1) & ~3
        for _ in range(48):  # PCI_FIND_CAP_TTL
            if pos < PCI_STD_HEADER_SIZEOF:
                return 0
            if self.cfg_read(pos, 1) == cap_id:
                return pos
            pos = self.cfg_read(pos + 1, 1) & ~3
        return 0

    @property
    def is_pcie(self) -> bool:
        return self.find_cap(PciCapId.EXP) != 0

    @property
    def command(self) -> int:
        return self.cfg_read(PCI_COMMAND, 2)

    @property
    def bus_master(self) -> bool:
        return bool(self.config[PCI_COMMAND] & PCI_COMMAND_MASTER)  # hot path: the stored byte

    @property
    def memory_enabled(self) -> bool:
        return bool(self.config[PCI_COMMAND] & PCI_COMMAND_MEMORY)

    def bar_address(self, i: int) -> int:
        """The address BAR ``i`` holds (the device's own register)."""
        bar = self.bars[i]
        off = PCI_BASE_ADDRESS_0 + 4 * i
        width = 8 if bar.is64 else 4
        return int.from_bytes(self.config[off : off + width], "little") & bar.wmask()

    # -- BARs ------------------------------------------------------------------------------

    def _bar_ok(self, i: int, offset: int, size: int, what: str) -> bool:
        if not 0 <= i < PCI_STD_NUM_BARS or not self.bars[i].implemented:
            self.machine.log(f"{self.name}: {what} of BAR{i}, which is not implemented")
            return False
        if offset < 0 or offset + size > self.bars[i].size:
            self.machine.log(f"{self.name}: {what} of BAR{i} at 0x{offset:x}/{size} past its end")
            return False
        if self.bars[i].mem and not self.memory_enabled:
            self.machine.log(
                f"{self.name}: {what} of BAR{i} at 0x{offset:x} with memory decoding off: "
                "no response"
            )
            return False
        return True

    def bar_read(self, i: int, offset: int, size: int) -> int:
        if not self._bar_ok(i, offset, size, "read"):
            return (1 << (8 * size)) - 1
        x = self.msix_cap
        if x is not None and x.in_table(i, offset):
            if size in (4, 8) and offset % size == 0:
                return x.table_read(offset - x.table_offset, size)
            return (1 << (8 * size)) - 1
        if x is not None and x.in_pba(i, offset):
            if size in (4, 8) and offset % size == 0:
                return x.pba_read(offset - x.pba_offset, size)
            return (1 << (8 * size)) - 1
        return self.bar_mmio_read(i, offset, size) & ((1 << (8 * size)) - 1)

    def bar_write(self, i: int, offset: int, size: int, value: int) -> None:
        if not self._bar_ok(i, offset, size, "write"):
            return
        value &= (1 << (8 * size)) - 1
        x = self.msix_cap
        if x is not None and x.in_table(i, offset):
            if size in (4, 8) and offset % size == 0:
                x.table_write(offset - x.table_offset, size, value)
            return
        if x is not None and x.in_pba(i, offset):
            return  # the PBA is read-only
        self.bar_mmio_write(i, offset, size, value)

    def bar_mmio_read(self, bar: int, offset: int, size: int) -> int:
        """The device's BAR registers; overridden by device models."""
        return (1 << (8 * size)) - 1

    def bar_mmio_write(self, bar: int, offset: int, size: int, value: int) -> None:
        """The device's BAR registers; overridden by device models."""

    # -- INTx ------------------------------------------------------------------------------

    @property
    def intx_level(self) -> bool:
        """The level the device drives on its INTx pin (Status.Interrupt Status)."""
        return self._intx_level

    @property
    def intx_asserted(self) -> bool:
        """The pin as the platform sees it: the level, unless Command.INTx Disable is set."""
        return self._intx_pin

    def set_intx(self, level: bool) -> None:
        if not self.interrupt_pin:
            return
        self._intx_level = bool(level)
        self._update_intx_pin()

    def on_intx(self, callback: IntxCallback | None) -> None:
        """Register ``callback(level)``, called on every change of the pin (None removes it).
        A pin asserted at registration is reported at once (level-triggered)."""
        self._intx_cb = callback
        if callback is not None and self._intx_pin:
            callback(True)

    def _update_intx_pin(self) -> None:
        pin = self._intx_level and not self.command & PCI_COMMAND_INTX_DISABLE
        if pin != self._intx_pin:
            self._intx_pin = pin
            if self._intx_cb is not None:
                self._intx_cb(pin)

    # -- MSI / MSI-X -----------------------------------------------------------------------

    @property
    def msi_vectors(self) -> int:
        return self.msi_cap.vectors if self.msi_cap is not None else 0

    @property
    def msix_vectors(self) -> int:
        return self.msix_cap.vectors if self.msix_cap is not None else 0

    @property
    def msix_bar(self) -> int | None:
        return self.msix_cap.table_bar if self.msix_cap is not None else None

    @property
    def msix_table_offset(self) -> int | None:
        return self.msix_cap.table_offset if self.msix_cap is not None else None

    @property
    def msix_pba_offset(self) -> int | None:
        return self.msix_cap.pba_offset if self.msix_cap is not None else None

    @property
    def msi_kind(self) -> MsiKind:
        """Which of MSI / MSI-X the capabilities have enabled (None: neither)."""
        if self.msix_cap is not None and self.msix_cap.enable:
            return "msix"
        if self.msi_cap is not None and self.msi_cap.enable:
            return "msi"
        return None

    def msi_program(self, vector: int, address: int, data: int) -> None:
        """Program the message of ``vector`` as the kernel's ``pci_write_msi_msg`` does.

        Into the enabled capability: MSI vector 0 sets the capability's address and data (a
        multi-vector MSI derives vector k's data from them); an MSI-X vector's table entry is
        written and unmasked. Programmed before an enable, the message is kept and written at
        ``msi_set_enabled``.
        """
        self._msgs[vector] = (address, data)
        self._apply_msg(vector)

    def _apply_msg(self, vector: int) -> None:
        address, data = self._msgs[vector]
        kind = self.msi_kind
        if kind == "msix":
            assert self.msix_cap is not None
            if vector >= self.msix_cap.vectors:
                self.machine.log(f"{self.name}: MSI-X vector {vector} does not exist")
                return
            entry = self.msix_cap.entries[vector]
            entry[0], entry[1], entry[2] = address & 0xFFFF_FFFC, address >> 32, data
            self.msix_cap.set_mask(vector, False)
        elif kind == "msi":
            cap = self.msi_cap
            assert cap is not None
            if vector == 0:
                cap.address, cap.data = address, data & 0xFFFF
            elif cap.message(vector) != (address, data):
                self.machine.log(
                    f"{self.name}: MSI vector {vector} programmed with 0x{address:x}/0x{data:x};"
                    f" the hardware sends {cap.message(vector)[0]:#x}/{cap.message(vector)[1]:#x}"
                )

    def msi_set_enabled(self, kind: MsiKind, nvec: int = 1) -> bool:
        """Enable MSI (``nvec`` vectors, rounded up to a power of two) or MSI-X, or neither
        (``None``: both disabled, every MSI-X entry masked, programmed messages forgotten)."""
        msi, msix = self.msi_cap, self.msix_cap
        if kind is None:
            if msi is not None:
                msi.enable = False
                msi.mme = 0
            if msix is not None:
                msix.enable = False
                for k in range(msix.vectors):
                    msix.set_mask(k, True)
            self._msgs.clear()
            return True
        cap = msi if kind == "msi" else msix
        if cap is None:
            self.machine.log(f"{self.name}: no {kind.upper()} capability")
            return False
        if kind == "msi":
            assert msi is not None
            if msix is not None:
                msix.enable = False
            n = max(1, min(nvec, msi.vectors))
            msi.mme = (n - 1).bit_length()
            msi.enable = True
        else:
            assert msix is not None
            if msi is not None:
                msi.enable = False
            msix.enable = True
        for v in sorted(self._msgs):
            self._apply_msg(v)
        return True

    def msi_mask(self, vector: int, masked: bool) -> None:
        """Mask or unmask one vector (MSI-X entry, or MSI with per-vector masking)."""
        if self.msi_kind == "msix" or (self.msi_kind is None and self.msix_cap is not None):
            assert self.msix_cap is not None
            if vector < self.msix_cap.vectors:
                self.msix_cap.set_mask(vector, masked)
        elif self.msi_cap is not None:
            self.msi_cap.set_mask(vector, masked)

    def raise_msi(self, vector: int) -> bool:
        """The device signals ``vector``. Returns True if the message write was delivered."""
        kind = self.msi_kind
        if kind is None:
            self.dropped_msis += 1
            self.machine.log(f"{self.name}: MSI {vector} raised with MSI/MSI-X disabled: dropped")
            return False
        if kind == "msi":
            cap = self.msi_cap
            assert cap is not None
            if vector >= cap.enabled_vectors:
                self.dropped_msis += 1
                self.machine.log(f"{self.name}: MSI vector {vector} not enabled: dropped")
                return False
            if cap.masking and cap.mask >> vector & 1:
                cap.pending |= 1 << vector
                return False
        else:
            xcap = self.msix_cap
            assert xcap is not None
            if vector >= xcap.vectors:
                self.dropped_msis += 1
                self.machine.log(f"{self.name}: MSI-X vector {vector} does not exist: dropped")
                return False
            if xcap.masked(vector):
                xcap.pba |= 1 << vector
                return False
        return self.send_msi(vector)

    def send_msi(self, vector: int) -> bool:
        """The message write itself: Bus Master check, then a 4-byte DMA write."""
        if not self.bus_master:
            self.dropped_msis += 1
            self.machine.log(
                f"{self.name}: MSI vector {vector} with bus mastering disabled: dropped"
            )
            return False
        cap = self.msix_cap if self.msi_kind == "msix" else self.msi_cap
        assert cap is not None
        address, data = cap.message(vector)
        return self.dma_write(address, data.to_bytes(4, "little"), what="MSI")

    # -- DMA -------------------------------------------------------------------------------

    def _translate(
        self, iova: int, size: int, write: bool, what: str
    ) -> list[tuple[int, int]] | None:
        direction = "write" if write else "read"
        if not self.bus_master:
            self.machine.log(
                f"{self.name}: {what} {direction} at iova 0x{iova:x}+0x{size:x} with bus "
                "mastering disabled: dropped"
            )
            return None
        try:
            return _coalesce(self.machine.iommu.translate(self.rid, iova, size, write))
        except IommuFault as e:
            self.dma_faults += 1
            self.machine.log(
                f"{self.name}: {what} {direction} fault at iova 0x{iova:x}+0x{size:x}: {e.reason}"
            )
            self.machine.record_fault(
                FaultRecord(
                    self.machine.clock.now_ns(), self.name, self.rid, iova, size, direction,
                    e.reason,
                )
            )
            return None

    def dma_read(self, addr: int, size: int, what: str = "DMA") -> bytes | None:
        if size <= 0:
            return b""
        ranges = self._translate(addr, size, False, what)
        if ranges is None:
            return None
        bus = self.machine.bus
        return b"".join(bus.read(p, n) for p, n in ranges)

    def dma_write(self, addr: int, data: bytes | bytearray | memoryview, what: str = "DMA") -> bool:
        size = len(data)
        if size <= 0:
            return True
        ranges = self._translate(addr, size, True, what)
        if ranges is None:
            return False
        mv = memoryview(data).cast("B")
        done = 0
        bus = self.machine.bus
        for p, n in ranges:
            bus.write(p, mv[done : done + n])
            done += n
        return True

    def dma_copy(self, dst: int, src: int, size: int, what: str = "DMA") -> bool:
        """Device-internal copy ``src`` → ``dst`` (both bus addresses): both translated
        before a byte moves; RAM to RAM goes through ``PhysBus.copy`` (memmove)."""
        if size <= 0:
            return True
        s = self._translate(src, size, False, what)
        if s is None:
            return False
        d = self._translate(dst, size, True, what)
        if d is None:
            return False
        bus = self.machine.bus
        si = di = 0
        s_off = d_off = 0
        while si < len(s) and di < len(d):
            sp, sn = s[si]
            dp, dn = d[di]
            n = min(sn - s_off, dn - d_off)
            bus.copy(dp + d_off, sp + s_off, n)
            s_off += n
            d_off += n
            if s_off == sn:
                si, s_off = si + 1, 0
            if d_off == dn:
                di, d_off = di + 1, 0
        return True

    # -- reset -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Conventional reset: config space, capabilities, INTx and the device's registers
        return to power-on values (SPEC §11.1, §11.4)."""
        if not self._power_on:
            self.finalize()
        self.config[:] = self._power_on
        for cap in self.caps:
            cap.reset()
        self._msgs.clear()
        self._intx_level = False
        self._update_intx_pin()
        self.reset_device()

    def reset_device(self) -> None:
        """Device-model part of a reset; overridden by device models."""

    def save_state(self) -> PciSavedState:
        """``pci_save_state``: the 16 header dwords and the MSI / MSI-X programming."""
        header = [self._read_dword(i) for i in range(PCI_STD_HEADER_SIZEOF // 4)]
        msi = msix = None
        if self.msi_cap is not None:
            c = self.msi_cap
            msi = (c.enable, c.mme, c.address, c.data, c.mask)
        if self.msix_cap is not None:
            x = self.msix_cap
            msix = (x.enable, x.function_mask, [list(e) for e in x.entries])
        return PciSavedState(header, msi, msix, dict(self._msgs))

    def restore_state(self, state: PciSavedState) -> None:
        """``pci_restore_state``: header dwords written back from the last one to the first
        (the Status half of dword 1 is not written: its RW1C bits would clear)."""
        for i in range(len(state.header) - 1, -1, -1):
            be = 0x3 if 4 * i == PCI_COMMAND else 0xF
            if self._read_dword(i) != state.header[i]:
                self._write_dword(i, be, state.header[i])
        if state.msi is not None and self.msi_cap is not None:
            c = self.msi_cap
            c.enable, c.mme, c.address, c.data, c.mask = state.msi
        if state.msix is not None and self.msix_cap is not None:
            x = self.msix_cap
            x.enable, x.function_mask, entries = state.msix
            x.entries = [list(e) for e in entries]
        self._msgs = dict(state.msgs)

    def reset_function(self) -> None:
        """``pci_reset_function``: save state, disable (Command = INTx Disable), reset,
        restore. What vfio-pci's DEVICE_RESET does to the hardware."""
        state = self.save_state()
        self.cfg_write(PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE)
        self.reset()
        self.restore_state(state)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} rid=0x{self.rid:x}>"
