"""Kernel profiles: which release's behaviour the model follows where the kernel changed.

SPEC §2.7 [decision D13].  A profile "X.Y" follows the "before" column of a §2.7 row when X.Y
is older than the row's "changed in" version; versions compare numerically (6.9 < 6.10).
Profiles older than 5.10 are refused; a version above 6.18 behaves as 6.18 (Appendix A #7).
Handlers ask ``profile.before("6.2")`` at the point where behaviour forks, next to a comment
naming the §2.7 row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

OLDEST = (5, 10)
NEWEST = (6, 18)
DEFAULT = "6.18"

_VERSION = re.compile(r"^(\d+)\.(\d+)$")


@lru_cache(maxsize=64)  # handlers ask profile.before("6.2") on every call
def parse_version(text: str) -> tuple[int, int]:
    """"X.Y" -> (X, Y); ValueError for anything else."""
    m = _VERSION.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"expected a kernel version \"X.Y\" such as \"6.18\", got {text!r}")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class KernelProfile:
    """The active profile.  ``version`` is what the user asked for; ``effective`` is capped
    at 6.18."""

    version: tuple[int, int]

    @classmethod
    def from_string(cls, text: str = DEFAULT) -> KernelProfile:
        v = parse_version(text)
        if v < OLDEST:
            raise ValueError(
                f"kernel profile {text} is not supported: profiles older than 5.10 are not "
                "supported (SPEC §2.7)"
            )
        return cls(v)

    @property
    def effective(self) -> tuple[int, int]:
        return min(self.version, NEWEST)

    def before(self, changed_in: str) -> bool:
        """True when the profile is older than ``changed_in``: follow the row's "before"."""
        return self.effective < parse_version(changed_in)

    def __str__(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"
