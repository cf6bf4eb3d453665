"""Shared helpers of the Type1 tests (SPEC §5, §13.3): containers, real user buffers, the
MAP/UNMAP/GET_INFO calls and a consistency check of the backend against the page table."""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

import vfiosim
from vfiosim.kernel.iommu.type1 import Type1Backend
from vfiosim.uapi.vfio import (
    VFIO_DMA_MAP_FLAG_READ,
    VFIO_DMA_MAP_FLAG_WRITE,
    VFIO_GROUP_SET_CONTAINER,
    VFIO_IOMMU_GET_INFO,
    VFIO_IOMMU_MAP_DMA,
    VFIO_IOMMU_UNMAP_DMA,
    VFIO_SET_IOMMU,
    VFIO_TYPE1_IOMMU,
    VFIO_TYPE1v2_IOMMU,
    sizeof,
    vfio_iommu_type1_dma_map,
    vfio_iommu_type1_dma_unmap,
)

PAGE = 4096
RW = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE
VERSIONS = {"v1": VFIO_TYPE1_IOMMU, "v2": VFIO_TYPE1v2_IOMMU}
MSI_START, MSI_LAST = 0xFEE0_0000, 0xFEEF_FFFF
APERTURE_LAST = (1 << 48) - 1
U64_MAX = (1 << 64) - 1


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FAILED = ctypes.c_void_p(-1).value


class Buf:
    """``size`` bytes of anonymous memory from mmap(2): real user memory at ``va``.

    Pages can be made read-only or unmapped to make pinning fail.  ``close`` unmaps what is
    left, page by page, so a hole is never unmapped twice."""

    def __init__(self, size: int) -> None:
        self.size = size
        va = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                        mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        assert va != MAP_FAILED
        self.va: int = va
        self._holes: set[int] = set()
        self._open = True

    def write(self, offset: int, data: bytes) -> None:
        ctypes.memmove(self.va + offset, data, len(data))

    def read(self, offset: int, n: int) -> bytes:
        return ctypes.string_at(self.va + offset, n)

    def readonly(self) -> Buf:
        """mprotect(PROT_READ): pinning it for device writes must fail (EFAULT)."""
        assert _libc.mprotect(self.va, self.size, mmap.PROT_READ) == 0
        return self

    def hole(self, page: int) -> Buf:
        """munmap page ``page``: pinning across it must fail (EFAULT)."""
        assert _libc.munmap(self.va + page * PAGE, PAGE) == 0
        self._holes.add(page)
        return self

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        for page in range(self.size // PAGE):
            if page not in self._holes:
                _libc.munmap(self.va + page * PAGE, PAGE)


#: A user address that is never mapped: below vm.mmap_min_addr (64 KiB by default).
UNMAPPED_VA = 0x1000


@contextlib.contextmanager
def kernel(**options: Any) -> Iterator[vfiosim.Kernel]:
    k = vfiosim.Kernel.from_preset("x86", clock="manual", **options)
    try:
        yield k
    finally:
        k.shutdown()


def open_type1(k: vfiosim.Kernel, version: int | str = "v2",
               group_index: int = 0) -> tuple[int, int]:
    """(container fd, group fd): group ``k.groups()[group_index]`` attached, SET_IOMMU done."""
    if isinstance(version, str):
        version = VERSIONS[version]
    fd = k.open("/dev/vfio/vfio", os.O_RDWR)
    g = k.open(f"/dev/vfio/{k.groups()[group_index]}", os.O_RDWR)
    k.ioctl(g, VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(fd))
    assert k.ioctl(fd, VFIO_SET_IOMMU, version) == 0
    return fd, g


def type1_container(k: vfiosim.Kernel, version: int | str = "v2", group_index: int = 0) -> int:
    """A container fd with group ``k.groups()[group_index]`` attached and SET_IOMMU done."""
    return open_type1(k, version, group_index)[0]


def backend(k: vfiosim.Kernel, fd: int) -> Type1Backend:
    b = k._file(fd).container.backend  # type: ignore[attr-defined]
    assert isinstance(b, Type1Backend)
    return b


def map_struct(vaddr: int, iova: int, size: int, flags: int = RW,
               argsz: int | None = None) -> vfio_iommu_type1_dma_map:
    return vfio_iommu_type1_dma_map(
        argsz=sizeof(vfio_iommu_type1_dma_map) if argsz is None else argsz,
        flags=flags, vaddr=vaddr, iova=iova, size=size)


def dma_map(k: vfiosim.Kernel, fd: int, vaddr: int, iova: int, size: int, flags: int = RW,
            argsz: int | None = None) -> int:
    return k.ioctl(fd, VFIO_IOMMU_MAP_DMA, map_struct(vaddr, iova, size, flags, argsz))


def dma_unmap(k: vfiosim.Kernel, fd: int, iova: int, size: int, flags: int = 0) -> int:
    """UNMAP_DMA; returns the ``size`` written back."""
    u = vfio_iommu_type1_dma_unmap(argsz=sizeof(vfio_iommu_type1_dma_unmap), flags=flags,
                                   iova=iova, size=size)
    assert k.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, u) == 0
    return u.size


def get_info(k: vfiosim.Kernel, fd: int, argsz: int, total: int | None = None,
             poison: int = 0xAA) -> bytearray:
    """GET_INFO into a ``total``-byte buffer (default argsz) filled with ``poison``."""
    buf = bytearray([poison]) * (argsz if total is None else total)
    buf[0:4] = argsz.to_bytes(4, "little")
    k.ioctl(fd, VFIO_IOMMU_GET_INFO, buf)
    return buf


def errno_of(fn: Callable[[], object]) -> int:
    """Run ``fn``; return the errno of the OSError it raises (0 if it returns)."""
    try:
        fn()
    except OSError as e:
        return e.errno
    return 0


def group_rids(k: vfiosim.Kernel, group_index: int = 0) -> list[int]:
    """Requester ids of the devices of ``k.groups()[group_index]``."""
    number = k.groups()[group_index]
    return [d.rid for d in k.machine.devices if d.group == number]


def unlimited_memlock(k: vfiosim.Kernel) -> None:
    """Let a test make tens of thousands of maps whatever this process's RLIMIT_MEMLOCK:
    act as a process with CAP_IPC_LOCK (pinning is still checked page by page)."""
    k.process.cap_ipc_lock = True


def check_consistency(k: vfiosim.Kernel, b: Type1Backend) -> None:
    """The backend's mappings, its page table, dma_avail and locked_vm agree."""
    dmas = b.mappings()
    prev_end = -1
    for d in dmas:
        assert d.size > 0 and d.iova % PAGE == 0 and d.size % PAGE == 0
        assert d.iova >= prev_end, "mappings overlap"
        prev_end = d.end
        assert b.iova_dma_valid(d.iova, d.end - 1)
    assert b.dma_avail == b.dma_entry_limit - len(dmas)
    assert b.dma_avail >= 0
    if b.rb is not None:  # profiles before 5.12 keep the kernel's rb-tree too
        b.rb.check()
        assert list(b.rb) == dmas
    # the page table maps exactly the mapped pages, with each mapping's permission
    ext = b.domain.extents()
    covered = sorted((e[0], e[0] + e[1], e[3]) for e in ext)
    want: list[tuple[int, int, int]] = []
    for d in dmas:
        if want and want[-1][1] == d.iova and want[-1][2] == d.prot:
            want[-1] = (want[-1][0], d.end, d.prot)
        else:
            want.append((d.iova, d.end, d.prot))
    merged: list[tuple[int, int, int]] = []
    for lo, hi, prot in covered:
        if merged and merged[-1][1] == lo and merged[-1][2] == prot:
            merged[-1] = (merged[-1][0], hi, prot)
        else:
            merged.append((lo, hi, prot))
    assert merged == want
    # locked_vm counts each process's pinned bytes
    per_pid: dict[int, int] = {}
    for d in dmas:
        per_pid[d.owner] = per_pid.get(d.owner, 0) + d.size
    locked = {pid: n for pid, n in k.machine.locked_vm.items() if n}
    assert locked == per_pid


# ---------------------------------------------------------------------------------------------
# Random ioctls (tests/test_fuzz_ioctl.py, bench/fuzz_ioctls.py)

#: every VFIO ioctl number, 0x3b64 (GET_API_VERSION) to 0x3b78, and a few neighbours
VFIO_NUMBERS = list(range(0x3B60, 0x3B7C))
#: argsz values worth trying: around every minsz and struct size, and extremes
ARGSZ = [0, 1, 4, 7, 8, 15, 16, 19, 20, 23, 24, 31, 32, 39, 40, 47, 48, 56, 64, 72, 120, 128,
         255, 256, 4095, 4096, 0xFFFF_FFFF]
#: integer arguments that are never a mapped address of this process (below mmap_min_addr,
#: or in the kernel half): a write through one can only fail with EFAULT
SAFE_INTS = [0, 1, 2, 3, 4, 6, 9, 10, 0x1000, 0xFFFF, 1 << 47, (1 << 64) - 1, 1 << 63]


class IoctlFuzzer:
    """Random ioctls against fresh x86 kernels.  Only OSError may come out, and after every
    call the Type1 state must be consistent (check_consistency); when a kernel is torn down
    nothing may stay pinned or accounted."""

    def __init__(self, seed: int, per_kernel: int = 400) -> None:
        import random

        self.rng = random.Random(seed)
        self.per_kernel = per_kernel
        self.calls = 0
        self.errnos: dict[int, int] = {}
        self.scratch = Buf(64 * PAGE)

    def close(self) -> None:
        self.scratch.close()

    def _arg(self, request: int) -> Any:
        r = self.rng
        kind = r.random()
        if kind < 0.15:
            return r.choice(SAFE_INTS)
        if kind < 0.22:
            return self.scratch.va + r.randrange(0, 60) * 64  # a pointer to scratch memory
        n = r.choice([0, 4, 8, 12, 16, 20, 24, 32, 40, 48, 64, 128, 256])
        plausible = request in (VFIO_IOMMU_MAP_DMA, VFIO_IOMMU_UNMAP_DMA) and r.random() < 0.7
        if plausible:
            n = r.choice([32, 32, 48])
        buf = bytearray(r.randbytes(n))
        if n >= 4 and r.random() < 0.8:
            buf[0:4] = r.choice(ARGSZ + [n, n]).to_bytes(4, "little")
        if n >= 8 and r.random() < 0.6:
            flags = r.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 0x20, 0xFFFF_FFFF])
            buf[4:8] = flags.to_bytes(4, "little")
        if plausible:
            # a plausible MAP/UNMAP: real vaddr, aligned iova and size
            page = r.randrange(0, 48)
            off = 8
            if request == VFIO_IOMMU_MAP_DMA:
                buf[0:8] = struct.pack("<II", r.choice([32, 32, 32, 40, 31]),
                                       r.choice([1, 2, 3, 3, 3, 3, 3, 3, 0, 4, 7]))
                buf[8:16] = (self.scratch.va + page * PAGE).to_bytes(8, "little")
                off = 16
            else:
                buf[0:8] = struct.pack("<II", r.choice([24, 24, 32, 48, 23]),
                                       r.choice([0, 0, 0, 2, 1, 4]))
            iova = r.randrange(0, 64) * PAGE if r.random() < 0.7 else r.choice(
                [0xFEE0_0000, (1 << 48) - PAGE, (1 << 64) - PAGE, r.getrandbits(64)])
            buf[off:off + 8] = iova.to_bytes(8, "little")
            size = r.randrange(1, 12) * PAGE if r.random() < 0.8 else r.choice(
                [0, PAGE + 1, 1 << 40, r.getrandbits(64)])
            buf[off + 8:off + 16] = size.to_bytes(8, "little")
        return buf

    def run(self, count: int) -> None:
        from vfiosim.uapi.vfio import VFIO_GROUP_GET_DEVICE_FD

        done = 0
        while done < count:
            with kernel() as k:
                unlimited_memlock(k)
                r = self.rng
                if r.random() < 0.3:
                    k.process.cap_ipc_lock = False
                    k.process.memlock_override = r.choice([0, PAGE, 16 * PAGE])
                fds = [k.open("/dev/vfio/vfio", os.O_RDWR)]
                for number in k.groups():
                    if r.random() < 0.8:
                        fds.append(k.open(f"/dev/vfio/{number}", os.O_RDWR))
                if r.random() < 0.7 and len(fds) > 1:
                    with contextlib.suppress(OSError):
                        k.ioctl(fds[1], VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(fds[0]))
                        k.ioctl(fds[0], VFIO_SET_IOMMU, r.choice([1, 3, 3, 6]))
                        dev = k.devices()[0].name.encode() + b"\0"
                        fds.append(k.ioctl(fds[1], VFIO_GROUP_GET_DEVICE_FD, bytearray(dev)))
                for _ in range(min(self.per_kernel, count - done)):
                    fd = r.choice(fds + [fds[0]] * 3 + [99])
                    request = r.choice(VFIO_NUMBERS + [VFIO_IOMMU_MAP_DMA] * 8
                                       + [VFIO_IOMMU_UNMAP_DMA] * 4) \
                        if r.random() < 0.95 else r.getrandbits(32)
                    arg = self._arg(request)
                    self.calls += 1
                    done += 1
                    try:
                        ret = k.ioctl(fd, request, arg)
                    except OSError as e:
                        self.errnos[e.errno] = self.errnos.get(e.errno, 0) + 1
                    else:
                        if request == VFIO_GROUP_GET_DEVICE_FD and k.fd_kind(fd) == "group":
                            fds.append(ret)
                    container = k._file(fds[0]).container  # type: ignore[attr-defined]
                    b = container.backend
                    if isinstance(b, Type1Backend):
                        check_consistency(k, b)
                        assert k.machine.bus.pinned_bytes() == sum(d.size for d in b.mappings())
                    else:
                        assert k.machine.bus.pinned_bytes() == 0
                for fd in reversed(fds):
                    with contextlib.suppress(OSError):
                        k.close(fd)
                assert k.machine.bus.pinned_bytes() == 0
                assert not any(k.machine.locked_vm.values())
