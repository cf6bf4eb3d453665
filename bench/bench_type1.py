"""Type1 in-process costs: ``python bench/bench_type1.py``; prints JSON.

* GET_API_VERSION calls per second (target >= 100,000/s);
* a MAP_DMA + UNMAP_DMA pair of 4 KiB (microseconds);
* MAP_DMA per operation with 1,000 and with 65,535 existing mappings, and their ratio
  (target <= 1.5: mappings live in an O(log n) structure).

The pinning check (madvise MADV_POPULATE_*, kernel/uaccess.py) runs at every MAP_DMA; it costs
the same at any number of mappings and is also reported alone (``pin_check_us``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from type1_helpers import (  # noqa: E402
    PAGE,
    Buf,
    kernel,
    map_struct,
    type1_container,
    unlimited_memlock,
)

from vfiosim.uapi.vfio import (  # noqa: E402
    VFIO_GET_API_VERSION,
    VFIO_IOMMU_MAP_DMA,
    VFIO_IOMMU_UNMAP_DMA,
    vfio_iommu_type1_dma_unmap,
)


def per_op(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def map_cost_at(existing: int, probe: int = 2000) -> float:
    """Seconds per MAP_DMA (and its UNMAP excluded) with ``existing`` mappings in place."""
    with kernel() as k:
        fd = type1_container(k, "v2")
        b = Buf(PAGE)
        unlimited_memlock(k)
        try:
            m = map_struct(b.va, 0, PAGE)
            for i in range(existing - probe):
                m.iova = i * PAGE
                k.ioctl(fd, VFIO_IOMMU_MAP_DMA, m)
            # the last `probe` maps are timed; they land among the existing ones
            base = (existing - probe) * PAGE

            def one(i: int) -> None:
                m.iova = base + i * PAGE
                k.ioctl(fd, VFIO_IOMMU_MAP_DMA, m)

            return per_op(one, probe)
        finally:
            b.close()


def main() -> int:
    out: dict[str, float] = {}
    with kernel() as k:
        fd = k.open("/dev/vfio/vfio")
        n = 200_000
        dt = per_op(lambda i: k.ioctl(fd, VFIO_GET_API_VERSION), n)
        out["get_api_version_per_s"] = round(1 / dt)
    with kernel() as k:
        fd = type1_container(k, "v2")
        b = Buf(PAGE)
        try:
            m = map_struct(b.va, 0x10_0000, PAGE)
            u = vfio_iommu_type1_dma_unmap(argsz=24, iova=0x10_0000, size=PAGE)

            def pair(i: int) -> None:
                k.ioctl(fd, VFIO_IOMMU_MAP_DMA, m)
                u.size = PAGE
                k.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, u)

            out["map_unmap_4k_pair_us"] = round(per_op(pair, 2000) * 1e6, 1)
            mm = k.process.mm
            out["pin_check_us"] = round(
                per_op(lambda i: mm.check(b.va, PAGE, True), 500) * 1e6, 1)
        finally:
            b.close()
    at_1k = map_cost_at(1_000, probe=500)
    at_64k = map_cost_at(65_535, probe=2000)
    out["map_us_at_1000"] = round(at_1k * 1e6, 1)
    out["map_us_at_65535"] = round(at_64k * 1e6, 1)
    out["map_cost_ratio_65535_vs_1000"] = round(at_64k / at_1k, 3)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
