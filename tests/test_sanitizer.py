"""The sanitizer: one test per check, each triggering it and reading the report's kind and
detail; the errno and the bytes written back stay those of the kernel; a clean seed flow
reports nothing (SPEC §13.8, Appendix A #38, decision D3)."""

from __future__ import annotations

import ctypes
import errno
import io
import os
from collections.abc import Callable
from typing import Any

import pytest
from device_helpers import (
    EDU,
    EDU_DMA_BUF,
    EDU_DMA_CMD,
    EDU_DMA_CNT,
    EDU_DMA_DELAY_NS,
    EDU_DMA_DST,
    EDU_DMA_SRC,
    EDU_DMA_START,
    TRIGGER_EVENTFD,
    EventFds,
    advance,
    bar_write,
    disable_irqs,
    enable_bus_master,
    expect_errno,
    fds_data,
    open_device,
    set_irqs,
    set_trigger,
)
from device_helpers import Buffer as DevBuffer
from device_helpers import map_dma as dev_map_dma
from pamu_helpers import RW, Buffer, MiB, make_attr, open_pamu

from vfiosim import Kernel
from vfiosim.demo import run_demo
from vfiosim.kernel import sanitizer as san
from vfiosim.kernel.sanitizer import SanitizerReport
from vfiosim.uapi import vfio as V
from vfiosim.uapi import vfio_pamu as P

MakeKernel = Callable[..., Kernel]


def only(k: Kernel, kind: str) -> SanitizerReport:
    """The one report there is, of ``kind``."""
    reports = k.sanitizer_reports()
    assert [r.kind for r in reports] == [kind], [r.message for r in reports]
    return reports[0]


def type1(k: Kernel) -> int:
    """A Type1 v2 container with the edu group attached."""
    c = k.open("/dev/vfio/vfio", os.O_RDWR)
    g = k.open(f"/dev/vfio/{k.machine.device(EDU).group}", os.O_RDWR)
    k.ioctl(g, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(c))
    k.ioctl(c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
    return c


# ---------------------------------------------------------------------------------------------
# The record and where it shows


def test_report_shows_in_warnings_events_dump_and_by_kind(x86: Kernel) -> None:
    c = type1(x86)
    buf = DevBuffer(4096)
    m = V.vfio_iommu_type1_dma_map(argsz=40, flags=RW, vaddr=buf.addr, iova=0, size=4096)
    assert x86.ioctl(c, V.VFIO_IOMMU_MAP_DMA, m) == 0  # argsz 40 works: bytes past minsz
    r = only(x86, san.ARGSZ)
    assert r.kind in san.KINDS
    assert x86.warnings == [r.message]
    assert f"sanitizer: argsz: {r.message}" in x86.events
    dumped = x86.dump()["sanitizer"]
    assert dumped == [r.as_dict()] and dumped[0]["detail"]["argsz"] == 40
    assert x86.sanitizer_reports(san.ARGSZ) == [r]
    assert x86.sanitizer_reports(san.PADDING) == []
    buf.close()


# ---------------------------------------------------------------------------------------------
# argsz: the wrong struct


def test_map_struct_passed_to_unmap(x86: Kernel) -> None:
    """A 32-byte vfio_iommu_type1_dma_map given to UNMAP_DMA: the kernel reads 24 bytes and
    unmaps; the sanitizer names the struct the size belongs to."""
    c = type1(x86)
    buf = DevBuffer(8192)
    m = V.vfio_iommu_type1_dma_map(argsz=32, flags=RW, vaddr=buf.addr, iova=0x10000, size=8192)
    x86.ioctl(c, V.VFIO_IOMMU_MAP_DMA, m)
    assert x86.sanitizer_reports() == []
    # The client reuses its map struct: argsz 32, and `vaddr` sits where unmap's iova is.
    wrong = V.vfio_iommu_type1_dma_map(argsz=32, flags=0, vaddr=0x10000, iova=8192, size=0)
    assert x86.ioctl(c, V.VFIO_IOMMU_UNMAP_DMA, wrong) == 0
    assert wrong.iova == 8192  # unmap's `size` (offset 16) was written back: 8192 unmapped
    r = only(x86, san.ARGSZ)
    assert r.detail == {"ioctl": "VFIO_IOMMU_UNMAP_DMA", "struct": "vfio_iommu_type1_dma_unmap",
                        "argsz": 32, "expected": [24],
                        "same_size_as": ["vfio_region_info", "vfio_iommu_type1_dma_map",
                                         "vfio_pamu_attr"]}
    assert "wrong struct" in r.message
    buf.close()


def test_argsz_too_small_is_the_einval_not_a_report(x86: Kernel) -> None:
    c = type1(x86)
    u = V.vfio_iommu_type1_dma_unmap(argsz=23, iova=0, size=4096)
    expect_errno(errno.EINVAL, x86.ioctl, c, V.VFIO_IOMMU_UNMAP_DMA, u)
    assert x86.sanitizer_reports() == []


def test_unmap_with_dirty_bitmap_expects_the_bitmap(x86: Kernel) -> None:
    """With GET_DIRTY_BITMAP the struct is 24 + sizeof(vfio_bitmap) = 48; without it 48 is a
    size no header gave vfio_iommu_type1_dma_unmap."""
    c = type1(x86)
    u = V.vfio_iommu_type1_dma_unmap(argsz=48, iova=0, size=4096)
    assert x86.ioctl(c, V.VFIO_IOMMU_UNMAP_DMA, bytearray(bytes(u) + bytes(24))) == 0
    assert only(x86, san.ARGSZ).detail["expected"] == [24]


def test_old_header_sizes_are_not_reported(x86: Kernel) -> None:
    """vfio_device_info 16/20/24 and vfio_iommu_type1_info 16/20/24 are sizes real headers
    had; more is room for capabilities.  17 and 22 are no header's."""
    d = open_device(x86)
    for argsz in (16, 20, 24, 64):
        x86.ioctl(d.fd, V.VFIO_DEVICE_GET_INFO, bytearray(argsz.to_bytes(4, "little")
                                                          + bytes(max(argsz, 24) - 4)))
        info = bytearray(max(argsz, 24))
        info[0:4] = argsz.to_bytes(4, "little")
        x86.ioctl(d.container, V.VFIO_IOMMU_GET_INFO, info)
    assert x86.sanitizer_reports() == []
    buf = bytearray(24)
    buf[0:4] = (17).to_bytes(4, "little")
    x86.ioctl(d.fd, V.VFIO_DEVICE_GET_INFO, buf)
    r = only(x86, san.ARGSZ)
    assert (r.detail["ioctl"], r.detail["argsz"], r.detail["expected"]) == (
        "VFIO_DEVICE_GET_INFO", 17, [16, 20, 24])
    buf[0:4] = (22).to_bytes(4, "little")
    x86.ioctl(d.container, V.VFIO_IOMMU_GET_INFO, buf)
    r = x86.sanitizer_reports()[1]
    assert (r.kind, r.detail["ioctl"], r.detail["argsz"]) == (
        san.ARGSZ, "VFIO_IOMMU_GET_INFO", 22)


def test_set_irqs_argsz_past_its_data(x86: Kernel) -> None:
    """SET_IRQS needs argsz >= 20 + data; the kernel accepts more, the sanitizer says the
    tail is never read."""
    d = open_device(x86)
    efds = EventFds()
    e = efds.new()
    set_irqs(d, TRIGGER_EVENTFD, V.VFIO_PCI_MSI_IRQ_INDEX, 0, 1, fds_data(e) + bytes(8),
             argsz=32)
    r = only(x86, san.ARGSZ)
    assert r.detail["ioctl"] == "VFIO_DEVICE_SET_IRQS" and r.detail["expected"] == [24]
    disable_irqs(d, V.VFIO_PCI_MSI_IRQ_INDEX)  # argsz 20, DATA_NONE: exact
    assert len(x86.sanitizer_reports()) == 1
    efds.close()


def test_group_status_and_irq_info_argsz(x86: Kernel) -> None:
    d = open_device(x86)
    st = bytearray(16)
    st[0:4] = (16).to_bytes(4, "little")
    x86.ioctl(d.group, V.VFIO_GROUP_GET_STATUS, st)
    info = bytearray(32)
    info[0:4] = (32).to_bytes(4, "little")
    x86.ioctl(d.fd, V.VFIO_DEVICE_GET_IRQ_INFO, info)
    got = [(r.detail["ioctl"], r.detail["argsz"], r.detail["expected"], r.detail["same_size_as"])
           for r in x86.sanitizer_reports(san.ARGSZ)]
    assert got == [("VFIO_GROUP_GET_STATUS", 16, [8], ["vfio_irq_info",
                                                       "vfio_pamu_msi_bank_unmap"]),
                   ("VFIO_DEVICE_GET_IRQ_INFO", 32, [16], ["vfio_region_info",
                                                           "vfio_iommu_type1_dma_map",
                                                           "vfio_pamu_attr"])]


def test_hot_reset_argsz_not_covering_its_group_fds(x86: Kernel) -> None:
    """The kernel reads ``count`` group fds whatever argsz says; argsz 12 with one fd works,
    and the sanitizer says argsz should have been 16."""
    d = open_device(x86)
    buf = bytearray(V.vfio_pci_hot_reset(argsz=12, flags=0, count=1)) + fds_data(d.group)
    assert x86.ioctl(d.fd, V.VFIO_DEVICE_PCI_HOT_RESET, buf) == 0
    r = only(x86, san.ARGSZ)
    assert (r.detail["ioctl"], r.detail["argsz"], r.detail["expected"]) == (
        "VFIO_DEVICE_PCI_HOT_RESET", 12, [16])


def test_dirty_pages_start_with_a_range_attached(x86: Kernel) -> None:
    c = type1(x86)
    dirty = bytearray(V.vfio_iommu_type1_dirty_bitmap(
        argsz=48, flags=V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START)) + bytes(40)
    assert x86.ioctl(c, V.VFIO_IOMMU_DIRTY_PAGES, dirty) == 0
    r = only(x86, san.ARGSZ)
    assert (r.detail["ioctl"], r.detail["argsz"], r.detail["expected"]) == (
        "VFIO_IOMMU_DIRTY_PAGES", 48, [8])


def test_pamu_attr_argsz(make_kernel: MakeKernel) -> None:
    k = make_kernel("p4080")
    p = open_pamu(k)
    assert p.set_attr(P.VFIO_ATTR_GEOMETRY, argsz=40, aperture_start=0,
                      aperture_end=32 * MiB - 1) == 0
    r = only(k, san.ARGSZ)
    assert (r.detail["ioctl"], r.detail["struct"], r.detail["expected"]) == (
        "VFIO_IOMMU_PAMU_SET_ATTR", "vfio_pamu_attr", [32])


# ---------------------------------------------------------------------------------------------
# padding


def test_pamu_attr_nonzero_pad(make_kernel: MakeKernel) -> None:
    k = make_kernel("p4080")
    p = open_pamu(k)
    a = make_attr(P.VFIO_ATTR_GEOMETRY, aperture_start=0, aperture_end=32 * MiB - 1)
    setattr(a, "__pad", 0xDEAD)
    assert p.ioctl(P.VFIO_IOMMU_PAMU_SET_ATTR, a) == 0  # ignored by the kernel
    assert p.geometry() == (0, 32 * MiB - 1)
    r = only(k, san.PADDING)
    assert r.detail == {"ioctl": "VFIO_IOMMU_PAMU_SET_ATTR", "struct": "vfio_pamu_attr",
                        "field": "__pad", "offset": 12, "value": 0xDEAD}
    g = make_attr(P.VFIO_ATTR_WINDOWS)
    setattr(g, "__pad", 1)
    p.ioctl(P.VFIO_IOMMU_PAMU_GET_ATTR, g)
    assert k.sanitizer_reports()[-1].detail["ioctl"] == "VFIO_IOMMU_PAMU_GET_ATTR"


def test_msi_bank_map_nonzero_pad(make_kernel: MakeKernel) -> None:
    k = make_kernel("p4080", msi_mode="explicit")
    p = open_pamu(k)
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    m = P.vfio_pamu_msi_bank_map(argsz=24, flags=V.VFIO_DMA_MAP_FLAG_WRITE, msi_bank_index=0,
                                 iova=30 * MiB)
    setattr(m, "__pad", 7)
    assert p.ioctl(P.VFIO_IOMMU_PAMU_MAP_MSI_BANK, m) == 0
    r = only(k, san.PADDING)
    assert (r.detail["struct"], r.detail["field"], r.detail["offset"], r.detail["value"]) == (
        "vfio_pamu_msi_bank_map", "__pad", 12, 7)


# ---------------------------------------------------------------------------------------------
# alignment: the reason of an EINVAL


@pytest.mark.parametrize(("field", "iova", "voff", "size"), [
    ("iova", 0x1_0800, 0, 4096),
    ("vaddr", 0x1_0000, 0x10, 4096),
    ("size", 0x1_0000, 0, 4097),
])
def test_type1_map_misaligned(x86: Kernel, field: str, iova: int, voff: int, size: int) -> None:
    c = type1(x86)
    buf = DevBuffer(3 * 4096)
    m = V.vfio_iommu_type1_dma_map(argsz=32, flags=RW, vaddr=buf.addr + voff, iova=iova,
                                   size=size)
    expect_errno(errno.EINVAL, x86.ioctl, c, V.VFIO_IOMMU_MAP_DMA, m)
    r = only(x86, san.MISALIGNED)
    value = {"iova": iova, "vaddr": buf.addr + voff, "size": size}[field]
    assert r.detail == {"ioctl": "VFIO_IOMMU_MAP_DMA", "field": field, "value": value,
                        "alignment": 4096}
    buf.close()


def test_type1_unmap_misaligned_size(make_kernel: MakeKernel) -> None:
    k = make_kernel("x86", kernel="6.1")  # the older order of checks reports it too
    c = type1(k)
    u = V.vfio_iommu_type1_dma_unmap(argsz=24, iova=0, size=0x1800)
    expect_errno(errno.EINVAL, k.ioctl, c, V.VFIO_IOMMU_UNMAP_DMA, u)
    assert only(k, san.MISALIGNED).detail == {"ioctl": "VFIO_IOMMU_UNMAP_DMA", "field": "size",
                                              "value": 0x1800, "alignment": 4096}


def test_size_zero_is_not_a_misalignment(x86: Kernel) -> None:
    c = type1(x86)
    u = V.vfio_iommu_type1_dma_unmap(argsz=24, iova=0, size=0)
    expect_errno(errno.EINVAL, x86.ioctl, c, V.VFIO_IOMMU_UNMAP_DMA, u)
    assert x86.sanitizer_reports() == []


def test_pamu_map_not_window_aligned(make_kernel: MakeKernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = open_pamu(k)
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    b = Buffer(4 * MiB)
    expect_errno(errno.EINVAL, p.map_dma, b.addr, 1 * MiB, 2 * MiB)
    assert only(k, san.MISALIGNED).detail == {"ioctl": "VFIO_IOMMU_MAP_DMA", "field": "iova",
                                              "value": 1 * MiB, "alignment": 2 * MiB}
    b.close()


# ---------------------------------------------------------------------------------------------
# DMA to an unmapped IOVA


def test_dma_to_unmapped_iova(x86: Kernel) -> None:
    d = open_device(x86)
    buf = DevBuffer(4096)
    dev_map_dma(d, buf, 0x10_0000)
    enable_bus_master(d)
    bar_write(d, EDU_DMA_SRC, 0x20_0000)  # nothing mapped there
    bar_write(d, EDU_DMA_DST, EDU_DMA_BUF)
    bar_write(d, EDU_DMA_CNT, 64)
    bar_write(d, EDU_DMA_CMD, EDU_DMA_START)
    advance(d, EDU_DMA_DELAY_NS)
    assert len(x86.faults) == 1
    r = only(x86, san.DMA_FAULT)
    assert r.detail == {"device": EDU, "rid": x86.machine.device(EDU).rid, "iova": 0x20_0000,
                        "length": 64, "direction": "read",
                        "reason": x86.faults[0].reason}
    assert "not mapped" in r.detail["reason"]
    buf.close()


# ---------------------------------------------------------------------------------------------
# eventfd leaks


def test_device_closed_with_triggers_registered(x86: Kernel) -> None:
    d = open_device(x86)
    efds = EventFds()
    e0, e1 = efds.new(), efds.new()
    set_trigger(d, V.VFIO_PCI_MSI_IRQ_INDEX, e0)
    set_trigger(d, V.VFIO_PCI_REQ_IRQ_INDEX, e1)
    x86.close(d.fd)  # the kernel tears both down
    r = only(x86, san.IRQ_LEAK)
    assert r.detail == {"device": EDU, "eventfds": [
        {"index": "MSI", "vector": 0, "role": "trigger", "fd": e0},
        {"index": "REQ", "vector": 0, "role": "trigger", "fd": e1}]}
    assert d.vdev.ctx == {} and d.vdev.req_trigger is None  # behaviour unchanged
    efds.close()


def test_eventfd_closed_while_registered(x86: Kernel) -> None:
    d = open_device(x86)
    e = os.eventfd(0)
    set_trigger(d, V.VFIO_PCI_MSI_IRQ_INDEX, e)
    os.close(e)  # the kernel keeps its own reference; interrupts now reach nobody
    x86.close(d.fd)
    r = only(x86, san.EVENTFD_CLOSED)
    assert r.detail == {"device": EDU, "index": "MSI", "vector": 0, "role": "trigger", "fd": e}


def test_intx_unmask_eventfd_is_a_leak_too(x86: Kernel) -> None:
    d = open_device(x86)
    efds = EventFds()
    trigger, unmask = efds.new(), efds.new()
    set_trigger(d, V.VFIO_PCI_INTX_IRQ_INDEX, trigger)
    set_irqs(d, V.VFIO_IRQ_SET_ACTION_UNMASK | V.VFIO_IRQ_SET_DATA_EVENTFD,
             V.VFIO_PCI_INTX_IRQ_INDEX, 0, 1, fds_data(unmask))
    x86.close(d.fd)
    assert only(x86, san.IRQ_LEAK).detail["eventfds"] == [
        {"index": "INTx", "vector": 0, "role": "trigger", "fd": trigger},
        {"index": "INTx", "vector": 0, "role": "unmask", "fd": unmask}]
    efds.close()


def test_disabled_triggers_are_not_a_leak(x86: Kernel) -> None:
    d = open_device(x86)
    efds = EventFds()
    set_trigger(d, V.VFIO_PCI_MSI_IRQ_INDEX, efds.new())
    disable_irqs(d, V.VFIO_PCI_MSI_IRQ_INDEX)
    x86.close(d.fd)
    assert x86.sanitizer_reports() == []
    efds.close()


# ---------------------------------------------------------------------------------------------
# MSI enabled when the last PAMU mapping goes [decision D3]


def test_last_pamu_mapping_removed_with_msi_enabled(make_kernel: MakeKernel) -> None:
    k = make_kernel("p4080", contiguous_memory=True)
    p = open_pamu(k)
    p.set_geometry(0, 32 * MiB - 1)
    p.set_windows(16)
    b = Buffer(2 * MiB)
    p.map_dma(b.addr, 0, 2 * MiB)
    name = next(d.name for d in k.machine.devices if d.group == 1 and d.model == "edu")
    dev = k.ioctl(p.gfds[1], V.VFIO_GROUP_GET_DEVICE_FD,
                  ctypes.create_string_buffer(name.encode()))
    e = os.eventfd(0)
    data = fds_data(e)
    k.ioctl(dev, V.VFIO_DEVICE_SET_IRQS, bytearray(
        bytes(V.vfio_irq_set(argsz=24, flags=TRIGGER_EVENTFD, index=V.VFIO_PCI_MSI_IRQ_INDEX,
                             start=0, count=1)) + data))
    assert p.unmap_dma(0, 2 * MiB) == 2 * MiB  # not refused (SPEC §6.7.1)
    r = only(k, san.MSI_UNMAPPED)
    assert r.detail["devices"] == [name]
    k.ioctl(dev, V.VFIO_DEVICE_SET_IRQS, bytearray(bytes(V.vfio_irq_set(
        argsz=20, flags=V.VFIO_IRQ_SET_ACTION_TRIGGER | V.VFIO_IRQ_SET_DATA_NONE,
        index=V.VFIO_PCI_MSI_IRQ_INDEX, start=0, count=0))))
    k.close(dev)
    os.close(e)
    assert len(k.sanitizer_reports()) == 1
    b.close()


# ---------------------------------------------------------------------------------------------
# A clean client reports nothing


@pytest.mark.parametrize("machine", ["p4080", "x86"])
def test_clean_seed_flow_reports_nothing(machine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's client (the seed sequence of SPEC §1.3 on p4080; the same client against
    Type1 on x86), run to the end and its kernel shut down: no report, and the demo says so."""
    out = io.StringIO()
    seen: list[Kernel] = []
    real_init = Kernel.__init__

    def keep(self: Kernel, *args: Any, **kw: Any) -> None:
        real_init(self, *args, **kw)
        seen.append(self)

    monkeypatch.setattr(Kernel, "__init__", keep)
    assert run_demo(machine, out=out, clock="manual") == 0
    (k,) = seen
    assert k.machine.faults == []
    assert k.sanitizer_reports() == [] and k.warnings == []
    assert "0 IOMMU faults, 0 sanitizer reports" in out.getvalue()
