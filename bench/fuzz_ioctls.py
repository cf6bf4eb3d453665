"""Long ioctl fuzz run: ``python bench/fuzz_ioctls.py [COUNT] [SEED]`` (default 100,000).

Random requests (every VFIO number and random ones), random argsz, random bytes against fresh
x86 kernels; only OSError may come out and the Type1 state must stay consistent
(tests/type1_helpers.py: IoctlFuzzer).  Prints a JSON summary.
"""

from __future__ import annotations

import errno
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from type1_helpers import IoctlFuzzer  # noqa: E402


def main(argv: list[str]) -> int:
    count = int(argv[1]) if len(argv) > 1 else 100_000
    seed = int(argv[2]) if len(argv) > 2 else 0
    f = IoctlFuzzer(seed)
    t0 = time.perf_counter()
    try:
        f.run(count)
    finally:
        f.close()
    dt = time.perf_counter() - t0
    print(json.dumps({
        "ioctls": f.calls,
        "seed": seed,
        "seconds": round(dt, 2),
        "per_second": round(f.calls / dt),
        "errnos": {errno.errorcode.get(e, str(e)): n for e, n in sorted(f.errnos.items())},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
