"""The one compiled part: GradientHistogramMonitor's bucket counts in C (callbacks/_bucket_count.c).

Metadata and dependencies are in setup.cfg. The extension uses the stable ABI (one build for Python 3.11 and later)
and is optional: where it cannot be compiled (no C compiler), the package installs without it and the monitor counts
through torch, the same counts more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "lightning_radam.callbacks._bucket_count",
            ["callbacks/_bucket_count.c"],
            define_macros=[("Py_LIMITED_API", "0x030B0000")],
            py_limited_api=True,
            optional=True,
        )
    ]
)
