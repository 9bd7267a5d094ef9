"""Builds the optional extension ``kdekit._C`` from ``csrc/`` (a pure-Python install always works).

* ``KDEKIT_SKIP_EXT=1``: no extension (torch fallback only).
* CPU kernels: one ``CppExtension`` with every ``csrc/*.cpp`` and ``csrc/cpu/*.cpp`` (``-O3 -g0``, OpenMP). No
  ``-std`` flag: ``cpp_extension`` adds the C++ standard of the installed torch (C++20 from torch 2.13, C++17 before),
  and the sources compile under both; an extension built in another standard than libtorch crashed on argument
  errors (torch 2.11 on a GPU machine).
* CUDA kernels (``csrc/cuda/*.cu``, each registering ``TORCH_LIBRARY_IMPL(kdekit, CUDA, m)``) join them in a
  ``CUDAExtension`` only when a CUDA build of torch and a CUDA toolkit are present, or when ``KDEKIT_FORCE_CUDA=1``
  (the CPU torch wheel cannot link them). nvcc flags: ``NVCC_FLAGS`` of ``csrc/cuda/nvcc_check.py`` (``-O3``), the
  compile check CI runs on every ``.cu`` with the CPU wheel.
* Skipped silently when ``csrc/`` holds no sources or torch's extension tooling cannot be imported.
"""
import glob
import os
import runpy

from setuptools import setup


def _want_cuda(torch_version_cuda, cuda_home) -> bool:
    if os.environ.get("KDEKIT_FORCE_CUDA", "0") == "1":
        return True
    return torch_version_cuda is not None and cuda_home is not None


def extension_modules():
    if os.environ.get("KDEKIT_SKIP_EXT", "0") == "1":
        return [], {}
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if not sources:
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        return [], {}
    cxx = ["-O3", "-g0", "-fopenmp"]  # no -std: cpp_extension picks the standard torch was built with
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    if cuda_sources and _want_cuda(torch.version.cuda, cpp_extension.CUDA_HOME):
        ext = cpp_extension.CUDAExtension(
            "kdekit._C",
            sources + cuda_sources,
            extra_compile_args={"cxx": cxx,
                                "nvcc": runpy.run_path("csrc/cuda/nvcc_check.py")["NVCC_FLAGS"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = cpp_extension.CppExtension("kdekit._C", sources, extra_compile_args={"cxx": cxx},
                                         extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extension_modules()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
