"""Random ioctls against fresh kernels raise only OSError and leave consistent state
(SPEC §3.7, §13.8).  CI runs a short sweep; bench/fuzz_ioctls.py runs >= 100,000."""

from __future__ import annotations

import errno
import os

import pytest
from type1_helpers import IoctlFuzzer

COUNT = int(os.environ.get("VFIOSIM_FUZZ_COUNT", "5000"))


@pytest.mark.parametrize("seed", [1, 2])
def test_random_ioctls_only_oserror(seed):
    f = IoctlFuzzer(seed)
    try:
        f.run(COUNT // 2)
    finally:
        f.close()
    assert f.calls == COUNT // 2
    # the sweep really reached the handlers, not only the dispatchers
    for e in (errno.EINVAL, errno.ENOTTY, errno.EFAULT):
        assert f.errnos.get(e, 0) > 0, errno.errorcode[e]
