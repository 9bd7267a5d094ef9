"""Builds the optional extension ``kdekit._C`` from ``csrc/`` (a pure-Python install always works).

* ``KDEKIT_SKIP_EXT=1``: no extension (the torch reference path only).
* CPU kernels: one ``CppExtension`` with every ``csrc/*.cpp`` and ``csrc/cpu/*.cpp`` (``-O3 -g0``; OpenMP only when
  the compiler accepts ``-fopenmp``). No ``-std`` flag: ``cpp_extension`` adds the C++ standard of the installed
  torch (C++20 from torch 2.13, C++17 before), and the sources compile under both; an extension built in another
  standard than libtorch crashed on argument errors (torch 2.11 on a GPU machine).
* CUDA kernels (``csrc/cuda/*.cu``, each registering ``TORCH_LIBRARY_IMPL(kdekit, CUDA, m)``) join them in a
  ``CUDAExtension`` only when a CUDA build of torch and a CUDA toolkit are present, or when ``KDEKIT_FORCE_CUDA=1``
  (the CPU torch wheel cannot link them). nvcc flags: ``NVCC_FLAGS`` of ``csrc/cuda/nvcc_check.py`` (``-O3``), the
  compile check CI runs on every ``.cu`` with the CPU wheel.
* A failed compile does not fail the install: the build warns and installs the pure-Python package, whose ops run
  the torch path (``kdekit.backends()`` says why ``cpp`` is unavailable).
* Skipped with a warning when ``csrc/`` holds no sources or torch's extension tooling cannot be imported.
"""
import glob
import os
import runpy
import shutil
import subprocess
import tempfile

from setuptools import setup

FALLBACK = ("kdekit: the C++ extension kdekit._C was not built ({why}); installing the pure-Python package, whose ops "
            "run the torch reference path (slower, same results). Set KDEKIT_SKIP_EXT=1 to skip the build silently.")


def _warn(why: str) -> None:
    print("\n" + "=" * 100 + "\nWARNING: " + FALLBACK.format(why=why) + "\n" + "=" * 100 + "\n", flush=True)


def _want_cuda(torch_version_cuda, cuda_home) -> bool:
    if os.environ.get("KDEKIT_FORCE_CUDA", "0") == "1":
        return True
    return torch_version_cuda is not None and cuda_home is not None


def _accepts(flag: str) -> bool:
    """Whether the C++ compiler (``$CXX`` or ``c++``) compiles and links a file with ``flag``."""
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx.split()[0]) is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.cpp")
        with open(src, "w") as f:
            f.write("int main() { return 0; }\n")
        r = subprocess.run(cxx.split() + [flag, src, "-o", os.path.join(d, "t")], capture_output=True)
    return r.returncode == 0


def extension_modules():
    if os.environ.get("KDEKIT_SKIP_EXT", "0") == "1":
        return [], {}
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if not sources:
        _warn("no C++ sources in csrc/")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as exc:
        _warn(f"torch's extension tooling is not importable: {exc}")
        return [], {}
    openmp = ["-fopenmp"] if _accepts("-fopenmp") else []
    cxx = ["-O3", "-g0"] + openmp  # no -std: cpp_extension picks the standard torch was built with
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    if cuda_sources and _want_cuda(torch.version.cuda, cpp_extension.CUDA_HOME):
        ext = cpp_extension.CUDAExtension(
            "kdekit._C",
            sources + cuda_sources,
            extra_compile_args={"cxx": cxx,
                                "nvcc": runpy.run_path("csrc/cuda/nvcc_check.py")["NVCC_FLAGS"]},
            extra_link_args=openmp,
        )
    else:
        ext = cpp_extension.CppExtension("kdekit._C", sources, extra_compile_args={"cxx": cxx},
                                         extra_link_args=openmp)
    base = cpp_extension.BuildExtension.with_options(use_ninja=True)

    class BuildExtOrFallBack(base):
        """torch's BuildExtension; a failed compile warns and leaves the pure-Python package."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # compiler missing or failing: fall back to the torch path
                _warn(f"compile failed: {exc}")

    return [ext], {"build_ext": BuildExtOrFallBack}


ext_modules, cmdclass = extension_modules()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
