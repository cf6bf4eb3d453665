"""hw/pci: config space with write masks, capabilities, BARs, INTx, MSI/MSI-X as memory
writes, DMA through the IOMMU, reset. Also hw/irq.py and hw/x86_msi.py, which MSIs end in."""

from __future__ import annotations

import pytest
from hw_helpers import Buffer, make_machine, msi_counter
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiosim.hw.iommu import FaultRecord
from vfiosim.hw.pci import (
    Bar,
    MsiCapability,
    MsixCapability,
    PcieCapability,
    PciFunction,
    PmCapability,
    byte_mask_update,
)
from vfiosim.hw.x86_msi import X86_MSI_BASE
from vfiosim.kernel.uaccess import LocalMemory
from vfiosim.uapi import pci_regs as R

CMD_MEM_MASTER = R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER


class Dev(PciFunction):
    """A test function: BAR0 32-bit 4 KiB with one register, BAR2 64-bit prefetchable."""

    def __init__(self, m, msi=None, msix=None, pcie=False, pin=1):  # noqa: ANN001
        super().__init__(
            m, "0000:05:00.0", 0x500, vendor=0xABCD, device=0x1234, revision=3,
            class_code=0x020000, subsystem_vendor=0x1111, subsystem=0x2222,
            bars=[Bar(0x4000), Bar(), Bar(1 << 21, is64=True, prefetch=True)],
            bar_addresses={0: 0xC000_0000, 2: 0x8_0000_0000}, interrupt_pin=pin,
            interrupt_line=9, pcie=pcie,
        )
        off = 0x40
        if pcie:
            self.add_cap(PcieCapability(), off)
            off = 0x80
            self.add_cap(PmCapability(), off)
            off = 0x88
        if msi is not None:
            self.add_cap(msi, off)
            off += 0x18
        if msix is not None:
            self.add_cap(msix, off)
        self.set_writable(0xC0, 0x100)
        self.finalize()
        self.reg = 0
        self.resets = 0

    def bar_mmio_read(self, bar, offset, size):  # noqa: ANN001
        return self.reg if (bar, offset) == (0, 0) else 0

    def bar_mmio_write(self, bar, offset, size, value):  # noqa: ANN001
        if (bar, offset) == (0, 0):
            self.reg = value

    def reset_device(self) -> None:
        self.reg = 0
        self.resets += 1


# -- byte masks and the config header --------------------------------------------------------


def test_byte_mask_update() -> None:
    assert byte_mask_update(0x11223344, 0b0001, 0xAABBCCDD) == 0x112233DD
    assert byte_mask_update(0x11223344, 0b0110, 0xAABBCCDD) == 0x11BBCC44
    assert byte_mask_update(0x11223344, 0xF, 0xFFFFFFFF, 0x0000FF00) == 0x1122FF44
    assert byte_mask_update(0, 0b1000, 0xFFFFFFFF, 0x0F000000) == 0x0F000000


def test_header() -> None:
    f = Dev(make_machine())
    assert f.cfg_read(R.PCI_VENDOR_ID, 2) == 0xABCD
    assert f.cfg_read(R.PCI_DEVICE_ID, 2) == 0x1234
    assert f.cfg_read(R.PCI_CLASS_REVISION, 4) == 0x02000003
    assert f.cfg_read(R.PCI_SUBSYSTEM_VENDOR_ID, 4) == 0x2222_1111
    assert f.cfg_read(R.PCI_INTERRUPT_PIN, 1) == 1
    assert f.cfg_read(R.PCI_INTERRUPT_LINE, 1) == 9
    assert f.cfg_read(R.PCI_COMMAND, 2) == 0
    assert f.cfg_size == 256 and not f.is_pcie
    f.cfg_write(R.PCI_VENDOR_ID, 4, 0)  # read-only
    assert f.cfg_read(R.PCI_VENDOR_ID, 4) == 0x1234ABCD
    assert f.cfg_read(0x100, 4) == 0xFFFFFFFF and "out of range" in f.machine.events[-1]


def test_command_and_status_w1c() -> None:
    f = Dev(make_machine())
    f.cfg_write(R.PCI_COMMAND, 2, 0xFFFF)
    assert f.cfg_read(R.PCI_COMMAND, 2) == (
        R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER | R.PCI_COMMAND_PARITY
        | R.PCI_COMMAND_SERR | R.PCI_COMMAND_INTX_DISABLE
    )
    assert f.bus_master and f.memory_enabled
    f.config[R.PCI_STATUS + 1] |= R.PCI_STATUS_REC_MASTER_ABORT >> 8  # the device saw one
    assert f.cfg_read(R.PCI_STATUS, 2) & R.PCI_STATUS_REC_MASTER_ABORT
    f.cfg_write(R.PCI_STATUS, 2, R.PCI_STATUS_REC_MASTER_ABORT | R.PCI_STATUS_CAP_LIST)
    assert not f.cfg_read(R.PCI_STATUS, 2) & R.PCI_STATUS_REC_MASTER_ABORT


def test_bar_sizing() -> None:
    f = Dev(make_machine())
    assert f.cfg_read(R.PCI_BASE_ADDRESS_0, 4) == 0xC000_0000
    f.cfg_write(R.PCI_BASE_ADDRESS_0, 4, 0xFFFF_FFFF)
    assert f.cfg_read(R.PCI_BASE_ADDRESS_0, 4) == 0xFFFF_C000
    f.cfg_write(R.PCI_BASE_ADDRESS_1, 4, 0xFFFF_FFFF)
    assert f.cfg_read(R.PCI_BASE_ADDRESS_1, 4) == 0  # not implemented
    assert f.cfg_read(R.PCI_BASE_ADDRESS_2, 4) == 0x0000_000C  # 64-bit prefetchable, low 0
    assert f.cfg_read(R.PCI_BASE_ADDRESS_3, 4) == 0x8
    f.cfg_write(R.PCI_BASE_ADDRESS_2, 4, 0xFFFF_FFFF)
    f.cfg_write(R.PCI_BASE_ADDRESS_3, 4, 0xFFFF_FFFF)
    assert f.cfg_read(R.PCI_BASE_ADDRESS_2, 4) == 0xFFE0_000C
    assert f.cfg_read(R.PCI_BASE_ADDRESS_3, 4) == 0xFFFF_FFFF
    assert f.bar_address(2) == 0xFFFF_FFFF_FFE0_0000


def test_bar_access_needs_memory_decoding() -> None:
    f = Dev(make_machine())
    f.bar_write(0, 0, 4, 0x55)
    assert f.reg == 0 and f.bar_read(0, 0, 4) == 0xFFFFFFFF
    assert "memory decoding off" in f.machine.events[-1]
    f.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY)
    f.bar_write(0, 0, 4, 0x55)
    assert f.bar_read(0, 0, 4) == 0x55
    assert f.bar_read(1, 0, 4) == 0xFFFFFFFF  # not implemented
    assert f.bar_read(0, 0x4000, 4) == 0xFFFFFFFF  # past the end



@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.sampled_from([1, 2, 4]),
                          st.integers(0, 0xFFFFFFFF)), max_size=30))
def test_byte_masked_writes_match_a_per_byte_model(writes) -> None:  # noqa: ANN001
    f = Dev(make_machine(), msi=MsiCapability(1, True, False))
    cap_bytes = set(range(0x40, 0x40 + 14))
    model = bytearray(f.config)
    for off, size, val in writes:
        if off + size > 256:
            continue
        f.cfg_write(off, size, val)
        for i in range(size):
            o = off + i
            if o in cap_bytes:
                continue
            b = (val >> (8 * i)) & 0xFF
            wm, w1c = f._wmask[o], f._w1cmask[o]
            model[o] = ((model[o] & ~wm) | (b & wm)) & ~(b & w1c) & 0xFF
    for o in range(256):
        if o not in cap_bytes:
            assert f.cfg_read(o, 1) == model[o], hex(o)


# -- capabilities ----------------------------------------------------------------------------


def test_cap_chain_and_find_cap() -> None:
    f = Dev(make_machine(), msi=MsiCapability(), msix=MsixCapability(4, 0, 0x1000, 0, 0x1800),
            pcie=True)
    assert f.cfg_size == 4096 and f.is_pcie
    assert f.cfg_read(R.PCI_CAPABILITY_LIST, 1) == 0x40
    assert f.cfg_read(R.PCI_STATUS, 2) & R.PCI_STATUS_CAP_LIST
    assert f.find_cap(R.PCI_CAP_ID_EXP) == 0x40
    assert f.find_cap(R.PCI_CAP_ID_PM) == 0x80
    assert f.find_cap(R.PCI_CAP_ID_MSI) == 0x88
    assert f.find_cap(R.PCI_CAP_ID_MSIX) == 0xA0
    assert f.find_cap(R.PCI_CAP_ID_VNDR) == 0
    assert f.cfg_read(0x41, 1) == 0x80 and f.cfg_read(0xA1, 1) == 0
    f.cfg_write(0x40, 2, 0xFFFF)  # ID and next pointer are read-only
    assert f.cfg_read(0x40, 2) == 0x8010


@pytest.mark.parametrize(
    "is64,masking,length,data_off",
    [(False, False, 10, 0x08), (True, False, 14, 0x0C), (False, True, 20, 0x08),
     (True, True, 24, 0x0C)],
)
def test_msi_layouts(is64: bool, masking: bool, length: int, data_off: int) -> None:
    cap = MsiCapability(vectors=4, is64=is64, masking=masking)
    assert cap.length == length
    f = Dev(make_machine(), msi=cap)
    base = 0x40
    ctl = f.cfg_read(base + R.PCI_MSI_FLAGS, 2)
    assert ctl & R.PCI_MSI_FLAGS_QMASK == 2 << 1  # 4 vectors capable
    assert bool(ctl & R.PCI_MSI_FLAGS_64BIT) == is64
    assert bool(ctl & R.PCI_MSI_FLAGS_MASKBIT) == masking
    f.cfg_write(base + R.PCI_MSI_ADDRESS_LO, 4, 0xFEE0_0003)
    assert f.cfg_read(base + R.PCI_MSI_ADDRESS_LO, 4) == 0xFEE0_0000
    if is64:
        f.cfg_write(base + R.PCI_MSI_ADDRESS_HI, 4, 0x1)
    f.cfg_write(base + data_off, 2, 0x4321)
    assert f.cfg_read(base + data_off, 2) == 0x4321
    assert cap.address == (0x1_FEE0_0000 if is64 else 0xFEE0_0000) and cap.data == 0x4321
    f.cfg_write(base + R.PCI_MSI_FLAGS, 2, 0xFFFF)
    assert f.cfg_read(base + R.PCI_MSI_FLAGS, 2) & 0x71 == 0x71  # enable + MME written
    assert cap.enable and cap.mme == 7
    if masking:
        mask_off = 0x10 if is64 else 0x0C
        f.cfg_write(base + mask_off, 4, 0xFFFFFFFF)
        assert f.cfg_read(base + mask_off, 4) == 0xF
        f.cfg_write(base + mask_off + 4, 4, 0xFFFFFFFF)  # pending: read-only
        assert f.cfg_read(base + mask_off + 4, 4) == 0
    # the bytes after the capability are the function's
    f.cfg_write(base + length, 1, 0xAB)
    assert f.cfg_read(base + length, 1) == (0xAB if base + length >= 0xC0 else 0)


def test_pcie_cap_registers_and_flr() -> None:
    f = Dev(make_machine(), pcie=True)
    assert f.cfg_read(0x40 + R.PCI_EXP_FLAGS, 2) & R.PCI_EXP_FLAGS_VERS == 2
    assert f.cfg_read(0x40 + R.PCI_EXP_DEVCAP, 4) & R.PCI_EXP_DEVCAP_FLR
    f.cfg_write(R.PCI_COMMAND, 2, CMD_MEM_MASTER)
    f.bar_write(0, 0, 4, 7)
    f.cfg_write(0x40 + R.PCI_EXP_DEVCTL, 2, R.PCI_EXP_DEVCTL_RELAX_EN)
    assert f.cfg_read(0x40 + R.PCI_EXP_DEVCTL, 2) == R.PCI_EXP_DEVCTL_RELAX_EN
    f.cfg_write(0x40 + R.PCI_EXP_DEVCTL, 2, R.PCI_EXP_DEVCTL_BCR_FLR)
    assert f.resets == 1 and f.reg == 0  # the FLR reset the function
    assert f.cfg_read(R.PCI_COMMAND, 2) == 0
    assert not f.cfg_read(0x40 + R.PCI_EXP_DEVCTL, 2) & R.PCI_EXP_DEVCTL_BCR_FLR


def test_pm_d3hot_to_d0_resets() -> None:
    f = Dev(make_machine(), pcie=True)
    f.cfg_write(R.PCI_COMMAND, 2, CMD_MEM_MASTER)
    f.cfg_write(0x80 + R.PCI_PM_CTRL, 2, 1)  # D1 unsupported: ignored
    assert f.cfg_read(0x80 + R.PCI_PM_CTRL, 2) & 3 == 0
    f.cfg_write(0x80 + R.PCI_PM_CTRL, 2, 3)
    assert f.cfg_read(0x80 + R.PCI_PM_CTRL, 2) & 3 == 3
    assert f.bus_master
    f.cfg_write(0x80 + R.PCI_PM_CTRL, 2, 0)
    assert f.cfg_read(0x80 + R.PCI_PM_CTRL, 2) & 3 == 0
    assert not f.bus_master  # reset to power-on


# -- INTx ------------------------------------------------------------------------------------


def test_intx_pin_status_and_disable() -> None:
    f = Dev(make_machine())
    seen: list[bool] = []
    f.on_intx(seen.append)
    f.set_intx(True)
    assert seen == [True] and f.intx_level
    assert f.cfg_read(R.PCI_STATUS, 2) & R.PCI_STATUS_INTERRUPT
    f.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_INTX_DISABLE)
    assert seen == [True, False] and not f.intx_asserted
    assert f.cfg_read(R.PCI_STATUS, 2) & R.PCI_STATUS_INTERRUPT  # status still follows
    f.cfg_write(R.PCI_COMMAND, 2, 0)
    assert seen == [True, False, True]
    f.set_intx(False)
    assert seen[-1] is False
    assert not f.cfg_read(R.PCI_STATUS, 2) & R.PCI_STATUS_INTERRUPT
    f.set_intx(True)
    late: list[bool] = []
    f.on_intx(late.append)  # registered while asserted: told at once
    assert late == [True]


def test_no_pin_no_intx() -> None:
    f = Dev(make_machine(), pin=0)
    f.set_intx(True)
    assert not f.intx_level


# -- MSI as a memory write -------------------------------------------------------------------


def test_msi_through_the_iommu_to_the_x86_doorbell() -> None:
    m = make_machine()
    f = Dev(m, msi=MsiCapability(vectors=1, is64=True))
    vec, hits = msi_counter(m)
    assert vec.address == X86_MSI_BASE and vec.irq >= 32
    f.msi_program(0, vec.address, vec.data)
    assert f.msi_set_enabled("msi", 1)
    assert f.raise_msi(0) is False  # bus mastering off: dropped
    assert hits == [] and "bus mastering disabled" in m.events[-1]
    f.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MASTER)
    assert f.raise_msi(0)
    assert hits == [1]
    assert m.iommu.calls[-1] == (0x500, X86_MSI_BASE, 4, True)
    assert f.raise_msi(1) is False  # one vector enabled


def test_msi_multi_vector_data() -> None:
    m = make_machine()
    f = Dev(m, msi=MsiCapability(vectors=4, is64=False))
    f.msi_set_enabled("msi", 3)  # rounded up to 4
    assert f.msi_cap.enabled_vectors == 4
    f.msi_program(0, X86_MSI_BASE, 0x40)
    assert f.msi_cap.message(3) == (X86_MSI_BASE, 0x43)


def test_msi_disabled_drops() -> None:
    m = make_machine()
    f = Dev(m, msi=MsiCapability())
    f.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MASTER)
    assert f.raise_msi(0) is False
    assert "disabled: dropped" in m.events[-1]


def test_msi_per_vector_mask_pending() -> None:
    m = make_machine()
    f = Dev(m, msi=MsiCapability(vectors=1, is64=True, masking=True))
    vec, hits = msi_counter(m)
    f.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MASTER)
    f.msi_set_enabled("msi", 1)
    f.msi_program(0, vec.address, vec.data)
    f.msi_mask(0, True)
    assert f.raise_msi(0) is False and f.msi_cap.pending == 1 and hits == []
    assert f.cfg_read(0x40 + R.PCI_MSI_PENDING_64, 4) == 1
    f.msi_mask(0, False)
    assert hits == [1] and f.msi_cap.pending == 0


def test_msix_table_mask_pba_and_unmask_delivery() -> None:
    m = make_machine()
    f = Dev(m, msix=MsixCapability(4, 0, 0x1000, 0, 0x1800))
    assert (f.msix_vectors, f.msix_bar, f.msix_table_offset, f.msix_pba_offset) == (
        4, 0, 0x1000, 0x1800)
    f.cfg_write(R.PCI_COMMAND, 2, CMD_MEM_MASTER)
    assert f.bar_read(0, 0x1000 + 0xC, 4) == 1  # entries are masked at power-on
    vecs = [msi_counter(m) for _ in range(2)]
    f.msi_set_enabled("msix", 4)
    f.msi_program(1, vecs[1][0].address, vecs[1][0].data)  # programmed: unmasked
    assert f.bar_read(0, 0x1010, 4) == X86_MSI_BASE
    assert f.bar_read(0, 0x1018, 4) == vecs[1][0].data
    assert f.bar_read(0, 0x101C, 4) == 0
    assert f.raise_msi(1) and vecs[1][1] == [1]
    # vector 0: written through the table by the driver, still masked -> PBA
    f.bar_write(0, 0x1000, 8, vecs[0][0].address)
    f.bar_write(0, 0x1008, 4, vecs[0][0].data)
    assert f.raise_msi(0) is False and f.bar_read(0, 0x1800, 8) == 1
    f.bar_write(0, 0x1800, 8, 0)  # the PBA is read-only
    assert f.bar_read(0, 0x1800, 8) == 1
    f.bar_write(0, 0x100C, 4, 0)  # unmask: the pending message goes out
    assert vecs[0][1] == [1] and f.bar_read(0, 0x1800, 8) == 0
    # function mask
    ctl = f.cfg_read(0x40 + R.PCI_MSIX_FLAGS, 2)
    assert ctl & R.PCI_MSIX_FLAGS_QSIZE == 3 and ctl & R.PCI_MSIX_FLAGS_ENABLE
    f.cfg_write(0x40 + R.PCI_MSIX_FLAGS, 2, ctl | R.PCI_MSIX_FLAGS_MASKALL)
    assert f.raise_msi(1) is False and vecs[1][1] == [1]
    f.cfg_write(0x40 + R.PCI_MSIX_FLAGS, 2, ctl)
    assert vecs[1][1] == [1, 1]
    assert f.cfg_read(0x40 + R.PCI_MSIX_TABLE, 4) == 0x1000
    assert f.cfg_read(0x40 + R.PCI_MSIX_PBA, 4) == 0x1800
    f.msi_set_enabled(None)
    assert f.msi_kind is None and f.bar_read(0, 0x101C, 4) == 1


def test_msi_programmed_before_enable_is_applied_at_enable() -> None:
    m = make_machine()
    f = Dev(m, msix=MsixCapability(2, 0, 0x1000, 0, 0x1800))
    f.cfg_write(R.PCI_COMMAND, 2, CMD_MEM_MASTER)
    vec, hits = msi_counter(m)
    f.msi_program(1, vec.address, vec.data)
    assert f.raise_msi(1) is False
    f.msi_set_enabled("msix", 2)
    assert f.raise_msi(1) and hits == [1]
    assert f.msi_set_enabled("msi", 1) is False  # no MSI capability


def test_msi_write_that_faults_is_recorded() -> None:
    m = make_machine()
    f = Dev(m, msix=MsixCapability(1, 0, 0x1000, 0, 0x1800))
    f.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MASTER)
    f.msi_set_enabled("msix", 1)
    f.msi_program(0, 0x1234_0000, 7)  # not a doorbell, not mapped
    assert f.raise_msi(0) is False
    rec = m.faults[-1]
    assert isinstance(rec, FaultRecord)
    assert (rec.iova, rec.length, rec.direction, rec.rid) == (0x1234_0000, 4, "write", 0x500)


# -- x86 MSI controller and irq domain -------------------------------------------------------


def test_x86_msi_alloc_free_and_spurious() -> None:
    m = make_machine()
    a, b = m.msi.alloc(), m.msi.alloc()
    assert a.data != b.data and a.irq != b.irq and a.address == b.address == X86_MSI_BASE
    m.bus.write(X86_MSI_BASE, a.data.to_bytes(4, "little"))  # no handler yet
    assert any("no handler" in e for e in m.events)
    got: list[str] = []
    m.msi.set_handler(a, lambda: got.append("a"))
    m.bus.write(X86_MSI_BASE + 0x100, a.data.to_bytes(4, "little"))  # anywhere in the window
    assert got == ["a"]
    m.msi.free(a)
    spur = m.irq.spurious
    m.bus.write(X86_MSI_BASE, a.data.to_bytes(4, "little"))
    assert m.irq.spurious == spur + 1 and got == ["a"]
    c = m.msi.alloc()
    assert c.data == a.data  # handles are reused lowest first
    m.bus.write(X86_MSI_BASE, b"\x01\x00")  # 2 bytes: not an interrupt
    assert "not an interrupt" in m.events[-1]
    assert m.bus.read(X86_MSI_BASE, 4) == b"\xff" * 4


def test_irq_domain() -> None:
    m = make_machine()
    got: list[int] = []
    n = m.irq.request(lambda: got.append(1))
    assert m.irq.fire(n) and got == [1]
    m.irq.free(n)
    assert m.irq.fire(n) is False and m.irq.spurious == 1
    assert "spurious" in m.events[-1]
    assert m.irq.request() == n  # reused


# -- DMA -------------------------------------------------------------------------------------


def _dma_dev(m):  # noqa: ANN001
    f = Dev(m)
    f.cfg_write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MASTER)
    return f


def test_dma_round_trip_and_copy() -> None:
    m = make_machine()
    f = _dma_dev(m)
    buf = Buffer(8192, fill=0)
    m.iommu.map(0x10000, m.bus.pin(LocalMemory(), buf.addr, 8192))
    assert f.dma_write(0x10FFE, b"wxyz")
    assert buf[0xFFE:0x1002] == b"wxyz"
    assert f.dma_read(0x10FFE, 4) == b"wxyz"
    assert f.dma_copy(0x11100, 0x10FFE, 4)
    assert buf[0x1100:0x1104] == b"wxyz"
    assert m.faults == []


def test_dma_fault_moves_nothing() -> None:
    m = make_machine()
    f = _dma_dev(m)
    buf = Buffer(3 * 4096, fill=0x77)
    ranges = m.bus.pin(LocalMemory(), buf.addr, 3 * 4096)
    m.iommu.map(0x0, ranges[:1])
    m.iommu.map(0x1000, ranges[1:2], write=False)
    m.iommu.map(0x3000, ranges[2:])  # hole at 0x2000
    assert f.dma_write(0x0FF0, b"\x00" * 0x20) is False  # second half read-only
    assert buf[:] == b"\x77" * (3 * 4096)
    assert m.faults[-1].reason == "permission" and m.faults[-1].direction == "write"
    assert f.dma_read(0x1FF0, 0x20) is None
    assert m.faults[-1].reason == "not mapped" and m.faults[-1].direction == "read"
    assert f.dma_copy(0x3000, 0x2000, 16) is False  # src faults: dst untouched
    assert f.dma_copy(0x1000, 0x0, 16) is False  # dst read-only: nothing moves
    assert buf[:] == b"\x77" * (3 * 4096)
    assert len(m.faults) == 4 and f.dma_faults == 4
    assert all(r.device == "0000:05:00.0" for r in m.faults)


def test_dma_needs_bus_master() -> None:
    m = make_machine()
    f = Dev(m)
    buf = Buffer(4096, fill=1)
    m.iommu.identity(m.bus.pin(LocalMemory(), buf.addr, 4096))
    assert f.dma_read(m.iommu.entries[0][0], 4) is None
    assert f.dma_write(m.iommu.entries[0][0], b"\x00") is False
    assert buf[:1] == b"\x01"
    assert m.faults == [] and "bus mastering disabled" in m.events[-1]


# -- reset -----------------------------------------------------------------------------------


def test_reset_and_reset_function() -> None:
    m = make_machine()
    f = Dev(m, msix=MsixCapability(2, 0, 0x1000, 0, 0x1800))
    f.cfg_write(R.PCI_COMMAND, 2, CMD_MEM_MASTER)
    f.cfg_write(R.PCI_BASE_ADDRESS_0, 4, 0xD000_0000)
    f.cfg_write(0xC0, 4, 0x12345678)
    vec, hits = msi_counter(m)
    f.msi_set_enabled("msix", 2)
    f.msi_program(0, vec.address, vec.data)
    f.bar_write(0, 0, 4, 9)
    f.reset_function()  # what DEVICE_RESET does: state saved and restored around the reset
    assert f.reg == 0
    assert f.cfg_read(R.PCI_COMMAND, 2) == CMD_MEM_MASTER
    assert f.cfg_read(R.PCI_BASE_ADDRESS_0, 4) == 0xD000_0000
    assert f.cfg_read(0xC0, 4) == 0  # device-specific bytes: not saved, reset
    assert f.raise_msi(0) and hits == [1]
    f.reset()  # a plain reset: power-on
    assert f.cfg_read(R.PCI_COMMAND, 2) == 0
    assert f.cfg_read(R.PCI_BASE_ADDRESS_0, 4) == 0xC000_0000
    assert f.msi_kind is None and f.bar_read(0, 0, 4) == 0xFFFFFFFF
