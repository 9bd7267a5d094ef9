"""The CUDA build (csrc/cuda/*.cu): every differentiable op is registered for the CUDA dispatch key, and the nvcc
compile check CI runs (csrc/cuda/nvcc_check.py) builds an object with the registration and every dtype's kernels.
The kernels themselves, on a GPU (``gpu`` marker, ``KDEKIT_TEST_DEVICE=cpu`` for a CPU dry run), are tested with
their op in test_<op>.py."""
import pathlib
import re
import runpy
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
import torch.utils.cpp_extension

ROOT = pathlib.Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"
# CPU only: on CUDA tensors labels and the training loss run the torch path around the CUDA/Triton histogram and
# kde2d_solve kernels, and pseudo_observations its stable argsort; uniform_ reproduces the CPU generator's Mersenne
# Twister (CUDA generators' torch.rand is Philox, already parallel)
NO_CUDA_OPS = {"kde2d_points", "soft_kde2d_pooled", "soft_kde2d_pooled_backward",
               "pseudo_observations", "pseudo_observations_backward", "uniform_"}


def test_every_differentiable_op_has_a_cuda_registration():
    defined = set(re.findall(r'm\.def\("(\w+)\(', (ROOT / "csrc" / "kdekit.cpp").read_text()))
    registered = []
    for f in sorted(CUDA_DIR.glob("*.cu")):
        text = f.read_text()
        assert "TORCH_LIBRARY_IMPL(kdekit, CUDA, m)" in text, f.name
        registered += re.findall(r'm\.impl\("(\w+)"', text)
    assert sorted(registered) == sorted(defined - NO_CUDA_OPS)


# source -> (host functions and kernel instantiations its object must define, an op name it registers)
NVCC_CASES = {
    "ccc.cu": (["ccc_cuda(", "ccc_backward_cuda("] + [f"ccc_{d}<{t}>(" for d in ("fwd", "bwd")
                                                      for t in ("float", "double", "c10::Half", "c10::BFloat16")],
               "ccc_backward"),
    "diffusion_kde.cu": (["kde2d_solve_cuda(", "kde2d_solve_kernel(", "k2_powers("], "kde2d_solve"),
}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", sorted(NVCC_CASES))
def test_nvcc_check_builds_registration_and_kernels(source, tmp_path):
    run = subprocess.run([sys.executable, str(CUDA_DIR / "nvcc_check.py"), "--out-dir", str(tmp_path),
                          str(CUDA_DIR / source)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    command, *diagnostics = run.stdout.strip().splitlines()
    assert diagnostics == [] and run.stderr == ""  # --Werror all-warnings: no output but the command itself
    command = shlex.split(command)
    standard = runpy.run_path(str(CUDA_DIR / "nvcc_check.py"))["cxx_standard_flag"]()  # cpp_extension's choice
    assert {standard, "-arch=sm_90", "all-warnings", f"-I{torch.utils.cpp_extension.include_paths()[0]}"} \
        <= set(command)
    obj = tmp_path / f"{source}.o"
    symbols = subprocess.run(["nm", "-C", str(obj)], capture_output=True, text=True, check=True).stdout
    assert "TORCH_LIBRARY_IMPL_static_init_kdekit_CUDA" in symbols
    names, op = NVCC_CASES[source]
    for name in names:
        assert name in symbols, name
    sections = subprocess.run(["readelf", "-S", str(obj)], capture_output=True, text=True, check=True).stdout
    assert ".nv_fatbin" in sections  # device code embedded
    assert op in obj.read_bytes().decode("latin-1")  # the registered op name
