"""vfiosim: an executable model of the Linux VFIO user-space interface.

The stable entry point is :class:`vfiosim.Kernel` (SPEC §12.1).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Kernel", "__version__"]


def __getattr__(name: str) -> object:
    # Lazy so that `import vfiosim.uapi.vfio` does not build the whole model.
    if name == "Kernel":
        from vfiosim.api import Kernel

        return Kernel
    raise AttributeError(name)
