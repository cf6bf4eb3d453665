"""`vfiosim demo`: a scripted VFIO session, printed step by step.

On a PAMU machine (the default, p4080) it runs the seed's sequence (SPEC §1.3, §6.9):
GROUP_SET_CONTAINER, SET_IOMMU(FSL_PAMU), GET_MSI_BANK_COUNT, SET_ATTR GEOMETRY, SET_ATTR
WINDOWS, MAP_DMA (the kernel maps the MSI banks in the top windows and enables the aperture),
SET_IRQS (the kernel programs MSI address/data into the device), then an edu DMA and an MSI
that arrives on the eventfd.  On x86 it runs the same client against Type1.

Everything goes through the public in-process API, exactly as a client would call it.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import select
import sys
from collections.abc import Callable
from typing import IO, Any

from vfiosim.api import Kernel
from vfiosim.uapi import vfio as V
from vfiosim.uapi import vfio_pamu as P

EDU_DMA_BUF = 0x40000
MiB = 1 << 20


class Printer:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.n = 0

    def step(self, call: str, result: str) -> None:
        self.n += 1
        self.out.write(f"{self.n:>3}  {call}\n       -> {result}\n")

    def note(self, text: str) -> None:
        for line in text.splitlines():
            self.out.write(f"       {line}\n")

    def head(self, text: str) -> None:
        self.out.write(f"\n== {text}\n")


def _buffer(size: int) -> tuple[mmap.mmap, int]:
    """Ordinary anonymous memory (4 KiB pages)."""
    m = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    return m, addr


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_HUGETLB = 0x40000


class HugeBuffer:
    """Anonymous memory on 2 MiB huge pages (MAP_HUGETLB): each page is physically contiguous,
    which is what a 2 MiB PAMU window needs (SPEC §10.3)."""

    def __init__(self, size: int) -> None:
        addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                          mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_HUGETLB, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "no huge pages")
        self.addr, self.size = addr, size
        self.view = (ctypes.c_char * size).from_address(addr)

    def close(self) -> None:
        if self.addr:
            _libc.munmap(self.addr, self.size)
            self.addr = 0


def _edu(k: Kernel, dev: int) -> tuple[Callable[[int], int], Callable[[int, int], None]]:
    def rd(off: int) -> int:
        return int.from_bytes(k.pread(dev, 4, off), "little")

    def wr(off: int, val: int) -> None:
        k.pwrite(dev, val.to_bytes(4, "little"), off)

    return rd, wr


def _wait_eventfd(k: Kernel, efd: int, timeout_s: float) -> int:
    """Wait for the eventfd as a client would (poll), advancing a manual clock meanwhile."""
    manual = k.machine.options.clock == "manual"
    for _ in range(1000):
        if manual:
            with k.machine.lock:
                k.machine.clock.run_until_idle()
        r, _, _ = select.select([efd], [], [], 0 if manual else timeout_s)
        if r:
            return os.eventfd_read(efd)
        if not manual:
            break
    return 0


def _edu_dma(k: Kernel, dev: int, src: int, dst: int, count: int, to_ram: bool,
             irq: bool) -> None:
    rd, wr = _edu(k, dev)
    k.pwrite(dev, src.to_bytes(8, "little"), 0x80)
    k.pwrite(dev, dst.to_bytes(8, "little"), 0x88)
    k.pwrite(dev, count.to_bytes(8, "little"), 0x90)
    wr(0x98, 0x1 | (0x2 if to_ram else 0) | (0x4 if irq else 0))


def _edu_round_trip(k: Kernel, dev: int, src: int, dst: int, n: int) -> None:
    """edu DMA of ``n`` bytes from iova ``src`` into its buffer, then from its buffer to iova
    ``dst`` with the completion interrupt; waits for both."""
    _edu_dma(k, dev, src, EDU_DMA_BUF, n, to_ram=False, irq=False)
    _wait_dma(k, dev)
    _edu_dma(k, dev, EDU_DMA_BUF, dst, n, to_ram=True, irq=True)
    _wait_dma(k, dev)


def _wait_dma(k: Kernel, dev: int) -> None:
    rd, _ = _edu(k, dev)
    manual = k.machine.options.clock == "manual"
    for _ in range(100000):
        if not rd(0x98) & 1:
            return
        if manual:
            with k.machine.lock:
                k.machine.clock.run_until_idle()
        else:
            select.select([], [], [], 0.001)


def window_table(k: Kernel, container_fd: int) -> str:
    """The PAMU window table of a container, one line per window in use."""
    from vfiosim.aperture import describe_windows

    return describe_windows(k, container_fd)


def run_demo(machine: str = "p4080", out: IO[str] | None = None, dump: bool = False,
             trace: IO[str] | None = None, **options: Any) -> int:
    """Run the scripted session on preset ``machine``; returns the exit status."""
    out = out or sys.stdout
    p = Printer(out)
    huge: HugeBuffer | None = None
    if machine != "x86" and not options.get("contiguous_memory"):
        try:
            huge = HugeBuffer(4 * MiB)
        except OSError:
            options["contiguous_memory"] = True
    k = Kernel.from_preset(machine, **options)
    k.trace_to(trace)
    try:
        if k.machine.kind == "fsl_pamu":
            rc = _seed_flow(k, p, huge)
        else:
            rc = _type1_flow(k, p)
        if dump:
            out.write(json.dumps(k.dump(), indent=2, default=str) + "\n")
        return rc
    finally:
        k.shutdown()
        if huge is not None:
            huge.close()


def _open_and_attach(k: Kernel, p: Printer) -> tuple[int, int, int, str]:
    edu = next(d for d in k.devices() if d.model == "edu")
    p.head(f"machine {k.machine.name}: {k.machine.description}")
    p.note(f"edu {edu.name} in IOMMU group {edu.group} (vendor {edu.vendor:#06x}, device "
           f"{edu.device:#06x}, driver {edu.driver})")
    c = k.open("/dev/vfio/vfio", os.O_RDWR)
    p.step('open("/dev/vfio/vfio")', f"container fd {c}")
    p.step("VFIO_GET_API_VERSION", str(k.ioctl(c, V.VFIO_GET_API_VERSION)))
    g = k.open(f"/dev/vfio/{edu.group}", os.O_RDWR)
    p.step(f'open("/dev/vfio/{edu.group}")', f"group fd {g}")
    st = V.vfio_group_status(argsz=ctypes.sizeof(V.vfio_group_status))
    k.ioctl(g, V.VFIO_GROUP_GET_STATUS, st)
    p.step("VFIO_GROUP_GET_STATUS", _flags(st.flags, "VFIO_GROUP_FLAGS_"))
    k.ioctl(g, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(c))
    p.step(f"VFIO_GROUP_SET_CONTAINER(fd {c})", "0: group attached to the container")
    return c, g, 0, edu.name


def _flags(value: int, prefix: str) -> str:
    names = [n for n in dir(V) if n.startswith(prefix)]
    parts = [n[len(prefix):] for n in names if getattr(V, n) & value and
             (getattr(V, n) & (getattr(V, n) - 1)) == 0]
    return f"{value:#x} ({' | '.join(sorted(parts)) or 'none'})"


def _seed_flow(k: Kernel, p: Printer, huge: HugeBuffer | None) -> int:
    c, g, _, edu_name = _open_and_attach(k, p)
    ext = k.ioctl(c, V.VFIO_CHECK_EXTENSION, P.VFIO_FSL_PAMU_IOMMU)
    p.step("VFIO_CHECK_EXTENSION(VFIO_FSL_PAMU_IOMMU)", str(ext))
    k.ioctl(c, V.VFIO_SET_IOMMU, P.VFIO_FSL_PAMU_IOMMU)
    p.step("VFIO_SET_IOMMU(VFIO_FSL_PAMU_IOMMU = 2)", "0: PAMU backend, msi_mode "
           f"{k.machine.options.msi_mode}")
    banks = k.ioctl(c, P.VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT)
    p.step("VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT", f"{banks} MSI banks: leave {banks} windows "
           "at the top of the aperture free")
    aperture = 32 * MiB
    attr = P.vfio_pamu_attr(argsz=ctypes.sizeof(P.vfio_pamu_attr),
                            attribute=P.VFIO_ATTR_GEOMETRY)
    attr.attr_info.attr.aperture_start = 0
    attr.attr_info.attr.aperture_end = aperture - 1
    k.ioctl(c, P.VFIO_IOMMU_PAMU_SET_ATTR, attr)
    p.step(f"VFIO_IOMMU_PAMU_SET_ATTR(GEOMETRY [0, {aperture - 1:#x}])", "0: 32 MiB aperture")
    windows = 16
    attr = P.vfio_pamu_attr(argsz=ctypes.sizeof(P.vfio_pamu_attr),
                            attribute=P.VFIO_ATTR_WINDOWS)
    attr.attr_info.windows = windows
    k.ioctl(c, P.VFIO_IOMMU_PAMU_SET_ATTR, attr)
    wsize = aperture // windows
    p.step(f"VFIO_IOMMU_PAMU_SET_ATTR(WINDOWS {windows})",
           f"0: window size {wsize:#x} (2 MiB); the count includes the {banks} bank windows")
    info = bytearray(256)
    info[0:4] = len(info).to_bytes(4, "little")
    k.ioctl(c, V.VFIO_IOMMU_GET_INFO, info)
    p.step("VFIO_IOMMU_GET_INFO", _describe_info(info))

    # DMA memory: two windows, each one physically contiguous 2 MiB range: huge pages, as a
    # real client uses hugetlbfs; without them the contiguous_memory option stands in.
    size = 2 * wsize
    if huge is not None:
        m, vaddr = huge.view, huge.addr
        p.note(f"DMA buffer: {size >> 20} MiB on 2 MiB huge pages at {vaddr:#x}")
    else:
        m, vaddr = _buffer(size)
        p.note(f"DMA buffer: {size >> 20} MiB of ordinary memory at {vaddr:#x}; no huge pages "
               "are reserved, so the machine runs with contiguous_memory = true (SPEC §10.3)")
    dma = V.vfio_iommu_type1_dma_map(argsz=ctypes.sizeof(V.vfio_iommu_type1_dma_map),
                                     flags=V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE,
                                     vaddr=vaddr, iova=0, size=size)
    k.ioctl(c, V.VFIO_IOMMU_MAP_DMA, dma)
    p.step(f"VFIO_IOMMU_MAP_DMA(iova 0, size {size:#x}, READ|WRITE)",
           "0: windows 0-1 map the buffer; first mapping, so the kernel mapped the MSI banks "
           "in the top windows and enabled the aperture")
    p.note(window_table(k, c))

    dev = _open_device(k, p, g, edu_name)

    efd = _enable_msi(k, dev)
    addr, data = _programmed_msi(k, edu_name)
    p.step(f"VFIO_DEVICE_SET_IRQS(MSI, start 0, count 1, eventfd {efd} (an OS fd))",
           f"0: the kernel programmed MSI address {addr:#x}, data {data:#x} into the device")
    p.note(_msi_note(k, addr, data))

    # A device DMA: edu reads 16 bytes from the buffer (iova 0) into its own buffer, then
    # writes them back at iova 0x1000.
    m[0:16] = b"seed flow, 2013!"
    _edu_round_trip(k, dev, 0, 0x1000, 16)
    p.step("edu DMA: iova 0 -> device buffer -> iova 0x1000 (with completion interrupt)",
           f"RAM at iova 0x1000 now holds {bytes(m[0x1000:0x1010])!r}")
    got = _wait_eventfd(k, efd, 2.0)
    p.step("poll(eventfd)", f"readable, count {got}: the MSI went device -> PAMU window -> "
           "MSIIR -> MSIR bit -> cascade -> eventfd")
    un = V.vfio_iommu_type1_dma_unmap(argsz=ctypes.sizeof(V.vfio_iommu_type1_dma_unmap),
                                      iova=0, size=size)
    # Disable MSI first so the last unmap does not leave an enabled vector without its bank.
    _disable_msi(k, dev)
    p.step("VFIO_DEVICE_SET_IRQS(MSI, count 0, DATA_NONE)", "0: MSI disabled, hwirq freed")
    k.ioctl(c, V.VFIO_IOMMU_UNMAP_DMA, un)
    p.step(f"VFIO_IOMMU_UNMAP_DMA(iova 0, size {size:#x})",
           f"0: size {un.size:#x} unmapped; last mapping gone: banks unmapped, aperture "
           "disabled")
    _close_all(k, p, (dev, g, c))
    os.close(efd)
    _done(k, p)
    del m
    return 0 if got == 1 else 1


def _open_device(k: Kernel, p: Printer, g: int, name: str) -> int:
    """GET_DEVICE_FD, then bus mastering on (vfio-pci opens a device with it off)."""
    dev = k.ioctl(g, V.VFIO_GROUP_GET_DEVICE_FD, ctypes.create_string_buffer(name.encode()))
    p.step(f'VFIO_GROUP_GET_DEVICE_FD("{name}")', f"device fd {dev}")
    cfg = V.VFIO_PCI_INDEX_TO_OFFSET(V.VFIO_PCI_CONFIG_REGION_INDEX)
    cmd = int.from_bytes(k.pread(dev, 2, cfg + 4), "little")
    k.pwrite(dev, (cmd | 0x4).to_bytes(2, "little"), cfg + 4)
    p.step("pwrite(config COMMAND |= BUS_MASTER)", "bus mastering on: the device may DMA")
    return dev


def _enable_msi(k: Kernel, dev: int) -> int:
    """SET_IRQS(MSI, DATA_EVENTFD | ACTION_TRIGGER) for vector 0; returns the eventfd."""
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    irq = V.vfio_irq_set(argsz=ctypes.sizeof(V.vfio_irq_set) + 4,
                         flags=V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_TRIGGER,
                         index=V.VFIO_PCI_MSI_IRQ_INDEX, start=0, count=1)
    k.ioctl(dev, V.VFIO_DEVICE_SET_IRQS, bytearray(bytes(irq) + efd.to_bytes(4, "little")))
    return efd


def _disable_msi(k: Kernel, dev: int) -> None:
    """SET_IRQS(MSI, DATA_NONE | ACTION_TRIGGER, count 0): every vector off."""
    off = V.vfio_irq_set(argsz=ctypes.sizeof(V.vfio_irq_set),
                         flags=V.VFIO_IRQ_SET_DATA_NONE | V.VFIO_IRQ_SET_ACTION_TRIGGER,
                         index=V.VFIO_PCI_MSI_IRQ_INDEX, start=0, count=0)
    k.ioctl(dev, V.VFIO_DEVICE_SET_IRQS, off)


def _close_all(k: Kernel, p: Printer, fds: tuple[int, ...]) -> None:
    """Close device, group and container fds, as a client ends its session."""
    for fd in fds:
        kind = k.fd_kind(fd)
        k.close(fd)
        p.step(f"close({kind} fd {fd})", "0")


def _done(k: Kernel, p: Printer) -> None:
    """The closing line, with the sanitizer's reports (SPEC §13.8), one line each."""
    reports = k.sanitizer_reports()
    p.head(f"done: {p.n} calls, {len(k.faults)} IOMMU faults, {len(reports)} sanitizer "
           "reports")
    for r in reports:
        p.note(f"sanitizer {r.kind}: {r.message}")


def _describe_info(info: bytearray) -> str:
    flags = int.from_bytes(info[4:8], "little")
    pgsizes = int.from_bytes(info[8:16], "little")
    cap = int.from_bytes(info[16:20], "little")
    parts = [f"flags {flags:#x}, iova_pgsizes {pgsizes:#x}"]
    while cap:
        cid = int.from_bytes(info[cap:cap + 2], "little")
        nxt = int.from_bytes(info[cap + 4:cap + 8], "little")
        if cid == V.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
            n = int.from_bytes(info[cap + 8:cap + 12], "little")
            ranges = []
            for i in range(n):
                o = cap + 16 + 16 * i
                s = int.from_bytes(info[o:o + 8], "little")
                e = int.from_bytes(info[o + 8:o + 16], "little")
                ranges.append(f"[{s:#x}, {e:#x}]")
            parts.append("IOVA_RANGE " + ", ".join(ranges))
        elif cid == V.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
            parts.append(f"DMA_AVAIL {int.from_bytes(info[cap + 8:cap + 12], 'little')}")
        elif cid == V.VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION:
            parts.append("MIGRATION")
        cap = nxt
    return "; ".join(parts)


def _programmed_msi(k: Kernel, name: str) -> tuple[int, int]:
    """What the kernel wrote into the device's MSI capability (the client cannot see it: vfio-pci
    virtualises the capability, SPEC §11.2)."""
    cap = k.machine.device(name).hw.msi_cap
    return cap.message(0)


def _msi_note(k: Kernel, addr: int, data: int) -> str:
    if k.machine.kind != "fsl_pamu":
        return "x86: the doorbell window is not translated (interrupt remapping)"
    rid = next(d.rid for d in k.machine.devices if d.model == "edu")
    try:
        phys = k.machine.iommu.translate(rid, addr, 4, True)[0][0]
    except Exception as e:  # the window table above shows why
        return f"address does not translate: {e}"
    return f"PAMU translates iova {addr:#x} -> physical {phys:#x} (an MSIIR register)"


def _type1_flow(k: Kernel, p: Printer) -> int:
    c, g, _, edu_name = _open_and_attach(k, p)
    for ext, name in ((V.VFIO_TYPE1_IOMMU, "VFIO_TYPE1_IOMMU"),
                      (V.VFIO_TYPE1v2_IOMMU, "VFIO_TYPE1v2_IOMMU")):
        p.step(f"VFIO_CHECK_EXTENSION({name})", str(k.ioctl(c, V.VFIO_CHECK_EXTENSION, ext)))
    k.ioctl(c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
    p.step("VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)", "0: Type1 v2 backend")
    info = bytearray(256)
    info[0:4] = len(info).to_bytes(4, "little")
    k.ioctl(c, V.VFIO_IOMMU_GET_INFO, info)
    p.step("VFIO_IOMMU_GET_INFO", _describe_info(info))
    size = 2 * MiB
    m, vaddr = _buffer(size)
    dma = V.vfio_iommu_type1_dma_map(argsz=ctypes.sizeof(V.vfio_iommu_type1_dma_map),
                                     flags=V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE,
                                     vaddr=vaddr, iova=0x10_0000, size=size)
    k.ioctl(c, V.VFIO_IOMMU_MAP_DMA, dma)
    p.step(f"VFIO_IOMMU_MAP_DMA(vaddr {vaddr:#x}, iova 0x100000, size {size:#x})", "0")
    dev = _open_device(k, p, g, edu_name)
    efd = _enable_msi(k, dev)
    addr, data = _programmed_msi(k, edu_name)
    p.step(f"VFIO_DEVICE_SET_IRQS(MSI, eventfd {efd})",
           f"0: MSI address {addr:#x}, data {data:#x} (untranslated doorbell)")
    m[0:16] = b"type1 round trip"
    _edu_round_trip(k, dev, 0x10_0000, 0x10_1000, 16)
    p.step("edu DMA: iova 0x100000 -> device buffer -> iova 0x101000",
           f"RAM now holds {bytes(m[0x1000:0x1010])!r}")
    got = _wait_eventfd(k, efd, 2.0)
    p.step("poll(eventfd)", f"readable, count {got}")
    _disable_msi(k, dev)
    p.step("VFIO_DEVICE_SET_IRQS(MSI, count 0, DATA_NONE)", "0: MSI disabled")
    un = V.vfio_iommu_type1_dma_unmap(argsz=ctypes.sizeof(V.vfio_iommu_type1_dma_unmap),
                                      iova=0x10_0000, size=size)
    k.ioctl(c, V.VFIO_IOMMU_UNMAP_DMA, un)
    p.step(f"VFIO_IOMMU_UNMAP_DMA(iova 0x100000, size {size:#x})",
           f"0: size {un.size:#x} unmapped")
    _close_all(k, p, (dev, g, c))
    os.close(efd)
    _done(k, p)
    del m
    return 0 if got == 1 else 1
