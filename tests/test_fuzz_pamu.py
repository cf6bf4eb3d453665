"""Random PAMU container ioctls raise only OSError and keep the backend's invariants
(SPEC §3.7, §6, §13.8): mostly plausible SET_ATTR / MAP_DMA / UNMAP_DMA / MSI-bank calls with
random corruption, in both MSI modes, on p4080 and t4240.

Invariants checked after every call: the domain is enabled exactly while a DMA mapping exists
(§6.3 "Enable"); in auto mode the bank windows are mapped exactly while a DMA mapping exists
(§6.7.1); what the bus has pinned is what the DMA windows hold.  After closing everything:
nothing pinned, no locked_vm, every SPAACE back in the pool.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import random
import struct

import pytest

from vfiosim import Kernel
from vfiosim.kernel.iommu.pamu import PamuBackend
from vfiosim.uapi import vfio as V
from vfiosim.uapi import vfio_pamu as P

COUNT = int(os.environ.get("VFIOSIM_FUZZ_COUNT", "5000"))
PAGE = 4096
PAMU_REQUESTS = [P.VFIO_IOMMU_PAMU_GET_ATTR, P.VFIO_IOMMU_PAMU_SET_ATTR,
                 P.VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT, P.VFIO_IOMMU_PAMU_MAP_MSI_BANK,
                 P.VFIO_IOMMU_PAMU_UNMAP_MSI_BANK, V.VFIO_IOMMU_MAP_DMA, V.VFIO_IOMMU_UNMAP_DMA,
                 V.VFIO_IOMMU_GET_INFO, V.VFIO_CHECK_EXTENSION, V.VFIO_GET_API_VERSION]
# Mostly mappings: a reconfiguration (SET_ATTR) drops them, so it comes less often.
WEIGHTS = [1, 2, 1, 2, 2, 8, 4, 1, 1, 1]


class PamuFuzzer:
    def __init__(self, seed: int, preset: str, mode: str) -> None:
        self.r = random.Random(seed)
        self.preset, self.mode = preset, mode
        self.buf = mmap.mmap(-1, 64 * PAGE)
        self.va = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))
        self.errnos: dict[int, int] = {}
        self.ok = 0
        self.backend: PamuBackend | None = None  # a client would learn this from GET_INFO

    def _pow2(self, lo: int, hi: int) -> int:
        return 1 << self.r.randrange(lo, hi)

    def _arg(self, request: int) -> bytearray:
        r = self.r
        if request in (P.VFIO_IOMMU_PAMU_GET_ATTR, P.VFIO_IOMMU_PAMU_SET_ATTR):
            attr = r.choice([0, 0, 1, 1, 1, 2, 3])
            a, b = 0, 0
            if attr == 0:
                size = self._pow2(12, 20) if r.random() < 0.9 else r.getrandbits(36)
                a = size * r.randrange(0, 4) if r.random() < 0.8 else r.getrandbits(36)
                b = a + size - 1
            elif attr == 1:
                a = r.choice([1, 2, 4, 8, 16, 32, 256, 0, 3, 512])
            elif attr == 2:
                a, b = r.randrange(0, 26), r.randrange(0, 5)
            buf = bytearray(struct.pack("<IIIIQQ", r.choice([32, 32, 32, 31, 40]),
                                        r.choice([0, 0, 0, 1]), attr, 0, a, b))
        elif request == P.VFIO_IOMMU_PAMU_MAP_MSI_BANK:
            buf = bytearray(struct.pack("<IIIIQ", r.choice([24, 24, 23]),
                                        r.choice([2, 3, 1, 0, 4]), r.randrange(0, 5), 0,
                                        r.randrange(0, 32) * PAGE))
        elif request == P.VFIO_IOMMU_PAMU_UNMAP_MSI_BANK:
            buf = bytearray(struct.pack("<IIQ", r.choice([16, 16, 15]), r.choice([0, 0, 1]),
                                        r.randrange(0, 32) * PAGE))
        elif request == V.VFIO_IOMMU_MAP_DMA:
            iova, size = self._range(8)
            vaddr = self.va + r.randrange(0, 16) * PAGE
            buf = bytearray(struct.pack("<IIQQQ", r.choice([32, 32, 32, 31]),
                                        r.choice([3, 3, 3, 1, 2, 0, 4]), vaddr, iova, size))
        elif request == V.VFIO_IOMMU_UNMAP_DMA:
            iova, size = self._range(16)
            buf = bytearray(struct.pack("<IIQQ", r.choice([24, 24, 23]), r.choice([0, 0, 1]),
                                        iova, size))
        else:
            buf = bytearray(r.getrandbits(8) for _ in range(r.choice([0, 8, 16, 64, 256])))
            if len(buf) >= 4:
                buf[0:4] = len(buf).to_bytes(4, "little")
        if r.random() < 0.05 and buf:  # random corruption
            i = r.randrange(len(buf))
            buf[i] = r.getrandbits(8)
        return buf

    def _range(self, most: int) -> tuple[int, int]:
        """Mostly whole windows of the current geometry (what GET_INFO tells a client), else
        arbitrary pages."""
        r, b = self.r, self.backend
        if b is not None and b.window_size and r.random() < 0.8:
            w = b.window_size
            n = max(1, min(most, (32 * PAGE) // w)) if w <= 32 * PAGE else 1
            return b.aperture_start + r.randrange(0, 16) * w, r.randrange(1, n + 1) * w
        return r.randrange(0, 32) * PAGE, r.randrange(0, most) * PAGE

    def check(self, k: Kernel, b: PamuBackend) -> None:
        dmas = list(b.iter_dma())
        assert b.enabled == bool(dmas), (b.enabled, dmas)
        if b.auto and b.windows_configured:
            msi = [w for w in b.window_table() if w.kind == "msi"]
            assert bool(msi) == bool(dmas)
        assert k.machine.bus.pinned_bytes() == sum(
            s.size for s in b.slots.values() if s.dma is not None), "pinned != DMA windows"

    def run(self, count: int) -> None:
        r = self.r
        k = Kernel.from_preset(self.preset, clock="manual", msi_mode=self.mode,
                               contiguous_memory=r.random() < 0.5)
        pool = k.machine.pamu.spaace_free_count()
        try:
            k.process.cap_ipc_lock = True
            c = k.open("/dev/vfio/vfio", os.O_RDWR)
            g = k.open("/dev/vfio/1", os.O_RDWR)
            k.ioctl(g, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(c))
            k.ioctl(c, V.VFIO_SET_IOMMU, P.VFIO_FSL_PAMU_IOMMU)
            b = self.backend = k._file(c).container.backend  # type: ignore[attr-defined]
            for _ in range(count):
                request = (r.choices(PAMU_REQUESTS, WEIGHTS)[0] if r.random() < 0.97
                           else r.getrandbits(32))
                arg: int | bytearray = self._arg(request)
                if request == V.VFIO_CHECK_EXTENSION:
                    arg = r.randrange(0, 12)
                try:
                    k.ioctl(c, request, arg)
                    self.ok += 1
                except OSError as e:
                    self.errnos[e.errno] = self.errnos.get(e.errno, 0) + 1
                self.check(k, b)
            k.close(g)
            k.close(c)
            assert k.machine.bus.pinned_bytes() == 0
            assert not any(k.machine.locked_vm.values())
            assert k.machine.pamu.spaace_free_count() == pool
        finally:
            k.shutdown()
            self.buf.close()


@pytest.mark.parametrize("preset,mode,seed", [("p4080", "auto", 1), ("p4080", "explicit", 2),
                                              ("t4240", "auto", 3)])
def test_random_pamu_ioctls_only_oserror(preset, mode, seed):
    f = PamuFuzzer(seed, preset, mode)
    f.run(COUNT // 3)
    # The sweep reached real work, not only the argument checks.
    assert f.ok > COUNT // 30
    assert f.errnos.get(22, 0) > 0  # EINVAL
