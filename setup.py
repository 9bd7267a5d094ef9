"""Builds the optional C++/CUDA extension ``kdekit._C`` from ``csrc/``.

A pure-Python install (torch fallback) always works: the extension is skipped when ``KDEKIT_SKIP_EXT=1``, when
``csrc/`` holds no sources, or when torch's C++ extension tooling is unavailable.
"""
import glob
import os

from setuptools import setup


def extension_modules():
    if os.environ.get("KDEKIT_SKIP_EXT", "0") == "1":
        return [], {}
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if not sources:
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return [], {}
    ext = CppExtension(
        "kdekit._C",
        sources,
        extra_compile_args={"cxx": ["-O3", "-g0", "-std=c++17", "-fopenmp"]},
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extension_modules()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
