"""Build hook for the optional C accelerator of `vfiosim run` (supervisor/_fastpath.c).

Everything else is declared in pyproject.toml.  The extension is optional: without a C
compiler or the Python headers the install still succeeds and the runner uses its pure-Python
notification loop (same behaviour, ~2 us more per emulated call).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vfiosim.supervisor._fastpath",
            ["src/vfiosim/supervisor/_fastpath.c"],
            optional=True,
        ),
    ],
)
