"""The one thing pyproject.toml cannot say: exporter._speedups, the
decoder's fast path in C, built when a C compiler is at hand and skipped
when not (the package then runs the same fast path in Python)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "exporter._speedups",
            ["exporter/_speedups.c"],
            optional=True,
            # Python's float arithmetic rounds a product before a sum: no
            # fused multiply-add, so timestamps come out bit for bit the same
            extra_compile_args=["-ffp-contract=off"],
        )
    ]
)
