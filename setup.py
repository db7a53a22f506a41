"""The one compiled part: GradientHistogramMonitor's bucket counts in C (callbacks/_bucket_count.c).

Metadata and dependencies are in setup.cfg. The extension is optional: where it cannot be compiled (no C compiler),
the package installs without it and the monitor counts through torch, the same counts more slowly. It uses the stable
ABI (one build, and a wheel tagged abi3, for CPython 3.11 and later), except on a free-threaded CPython, which has no
stable ABI before 3.15: there it is built for that interpreter alone.
"""

import sysconfig

from setuptools import Extension, setup

STABLE_ABI = not sysconfig.get_config_var("Py_GIL_DISABLED")

setup(
    ext_modules=[
        Extension(
            "lightning_radam.callbacks._bucket_count",
            ["callbacks/_bucket_count.c"],
            define_macros=[("Py_LIMITED_API", "0x030B0000")] if STABLE_ABI else [],
            py_limited_api=STABLE_ABI,
            optional=True,
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp311"}} if STABLE_ABI else {},
)
