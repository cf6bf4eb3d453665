"""Per-access cost of PAMU translation at 2, 16 and 256 windows (SPEC §7.4).

Translation computes the window index arithmetically and reads one primary entry and at most
one SPAACE, so the cost must not grow with the window count.  Prints JSON:
``{"accesses": n, "ns_per_access": {"2": ..., "16": ..., "256": ...}, "ratio_256_to_2": ...}``.

Run: ``python bench/bench_pamu_translate.py [accesses]``.
"""

from __future__ import annotations

import json
import random
import sys
import time

from vfiosim.hw.pamu import PAACE_AP_PERMS_ALL, PAMU_NOT_DEFINED, Pamu

N = PAMU_NOT_DEFINED
LIODN = 0x0C0
APERTURE = 1 << 30  # 1 GiB at IOVA 0
PHYS_BASE = 0x8_0000_0000


def build(windows: int) -> Pamu:
    """A LIODN with ``windows`` subwindows, every one mapped read/write, as the domain does."""
    p = Pamu(liodns=[LIODN])
    sub = APERTURE // windows
    assert p.pamu_disable_liodn(LIODN) == 0
    assert p.pamu_config_ppaace(LIODN, 0, APERTURE, N, 0, N, N, windows, 0) == 0
    for k in range(windows):
        assert p.pamu_config_spaace(LIODN, windows, k, sub, N, (PHYS_BASE + k * sub) >> 12,
                                    N, N, 1 if k else 0, PAACE_AP_PERMS_ALL) == 0
    assert p.pamu_enable_liodn(LIODN) == 0
    return p


def per_access_ns(windows: int, accesses: int, repeats: int = 5) -> float:
    p = build(windows)
    rng = random.Random(windows)
    iovas = [rng.randrange(0, APERTURE - 64) & ~63 for _ in range(accesses)]
    writes = [bool(i & 1) for i in range(accesses)]
    translate = p.translate
    for iova, w in zip(iovas[:100], writes[:100], strict=True):  # check, and warm up
        assert translate(LIODN, iova, 64, w) == [(PHYS_BASE + iova, 64)]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for iova, w in zip(iovas, writes, strict=True):
            translate(LIODN, iova, 64, w)
        best = min(best, (time.perf_counter_ns() - t0) / accesses)
    return best


def main() -> None:
    accesses = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    res = {str(w): round(per_access_ns(w, accesses), 1) for w in (2, 16, 256)}
    print(json.dumps({
        "accesses": accesses,
        "access_size": 64,
        "ns_per_access": res,
        "ratio_256_to_2": round(res["256"] / res["2"], 3),
    }))


if __name__ == "__main__":
    main()
