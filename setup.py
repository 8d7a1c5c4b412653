"""Build hook for the optional compiled kernels (bebert_cli._kernels).

Project metadata lives in pyproject.toml; this file only adds the C extension.
The extension is optional: without a working C compiler (or OpenMP) the install
still succeeds and bebert_cli.kernels falls back to pure torch.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# -ffp-contract=off: no FMA contraction, so float(dot)*scale + bias rounds twice
# exactly like torch (GCC's GNU C mode fuses a*b+c, on aarch64 even at the baseline ISA;
# -std=c11 implies off, the flag keeps it off if -std ever changes).
# No -march=native: ISA versions are picked at run time (x86: target attributes;
# aarch64: NEON is baseline). csrc/tests/Makefile uses the same flags.
COMPILE_ARGS = ["-O3", "-std=c11", "-fopenmp", "-pthread", "-ffp-contract=off", "-fno-strict-aliasing"]
LINK_ARGS = ["-fopenmp", "-pthread"]


class OptionalBuildExt(build_ext):
    """Never fail the install because of the extension: retry without OpenMP, then skip."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler at all (DistutilsPlatformError, ...)
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
            return
        except Exception as exc:
            first = exc
        if "-fopenmp" in ext.extra_compile_args:  # e.g. Apple clang without libomp
            ext.extra_compile_args = [a for a in ext.extra_compile_args if a != "-fopenmp"]
            ext.extra_link_args = [a for a in ext.extra_link_args if a != "-fopenmp"]
            try:
                super().build_extension(ext)
                print("WARNING: bebert_cli._kernels built WITHOUT OpenMP (single-threaded)", file=sys.stderr)
                return
            except Exception:
                pass
        self._warn(first)

    @staticmethod
    def _warn(exc):
        print(
            f"WARNING: could not build the optional bebert_cli._kernels extension ({exc}); "
            "bebert will use the slower pure-torch path.",
            file=sys.stderr,
        )


setup(
    ext_modules=[
        Extension(
            "bebert_cli._kernels",
            ["csrc/bebert_kernels.c", "csrc/bebert_kernels_core.c", "csrc/bebert_parallel.c"],
            include_dirs=["csrc"],
            depends=["csrc/bebert_kernels_core.h", "csrc/bebert_parallel.h"],
            extra_compile_args=COMPILE_ARGS,
            extra_link_args=LINK_ARGS,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
