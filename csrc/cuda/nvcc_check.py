"""Compile check of the CUDA sources with nvcc against the installed torch's headers (CI: ``.ci/run``; test:
``tests/kdekit/test_cuda_build.py``). Works with a CPU-only torch wheel, which ships the c10/ATen CUDA headers.

Flags: those ``setup.py``'s ``CUDAExtension`` compiles with (torch's ``COMMON_NVCC_FLAGS``, the extension defines,
torch's include dirs, :data:`NVCC_FLAGS`, the C++ standard of :func:`cxx_standard_flag`), plus ``-arch=sm_90
-Xcompiler -fPIC --Werror all-warnings``. A CPU wheel lacks the generated ``c10/cuda/impl/cuda_cmake_macros.h`` (it
only defines ``C10_CUDA_BUILD_SHARED_LIBS``, used on Windows), so ``-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE`` skips it when
it is absent.

    python csrc/cuda/nvcc_check.py [--out-dir DIR] [--jobs J] FILE.cu ...   (objects go to DIR, else /dev/null)

Each file takes ~10 s and ~1 GB of memory (torch headers); ``--jobs`` (default ``$MAX_JOBS`` or 2) run at once.
"""
import argparse
import concurrent.futures
import os
import shlex
import subprocess
import sys

NVCC_FLAGS = ["-O3"]  # also used by setup.py, where cpp_extension adds the C++ standard (cxx_standard_flag)


def cxx_standard_flag() -> str:
    """The ``-std`` flag ``torch.utils.cpp_extension`` gives extensions for the installed torch: C++20 from torch 2.13
    (its headers need it), C++17 before (the standard libtorch itself was built with)."""
    import torch

    major, minor = (int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    return "-std=c++20" if (major, minor) >= (2, 13) else "-std=c++17"


def command(source: str, output: str = "/dev/null") -> list:
    """The nvcc command line that compiles ``source`` to the object ``output``."""
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

    includes = include_paths()  # the 'cpu' variant: torch's own dirs, no CUDA_HOME needed
    defines = ["-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C"]
    if not os.path.exists(os.path.join(includes[0], "c10", "cuda", "impl", "cuda_cmake_macros.h")):
        defines.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")
    return (["nvcc", "-c", *NVCC_FLAGS, cxx_standard_flag(), "-arch=sm_90", "-Xcompiler", "-fPIC", "--Werror",
             "all-warnings",
             *COMMON_NVCC_FLAGS, *defines] + [f"-I{d}" for d in includes] + [source, "-o", output])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--out-dir", help="keep the objects here (default: discard)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS", "2")))
    args = parser.parse_args(argv)
    cmds = [command(src, os.path.join(args.out_dir, os.path.basename(src) + ".o") if args.out_dir else "/dev/null")
            for src in args.sources]
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        runs = list(pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True), cmds))
    failed = []
    for src, cmd, run in zip(args.sources, cmds, runs):
        print(shlex.join(cmd), flush=True)
        print(run.stdout + run.stderr, end="", flush=True)
        if run.returncode != 0:
            failed.append(src)
    if failed:
        print(f"nvcc failed on: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
