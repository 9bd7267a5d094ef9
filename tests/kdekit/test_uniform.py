"""kdekit.ops.uniform.rand and its kernel ``kdekit::uniform_``: bitwise torch.rand's values from the same CPU
generator, and the generator left in torch.rand's state (so draws through kdekit and through torch interleave as
one stream), for both dtypes, sizes on both sides of the Mersenne Twister's 624-word block, and the default
generator."""
import pytest
import torch

from kdekit import _ext
from kdekit.ops import uniform

pytestmark = pytest.mark.skipif(not _ext.LOADED, reason=f"kdekit._C not built: {_ext.LOAD_ERROR}")
SIZES = [1, 7, 311, 623, 624, 625, 1247, 1248, 1249, 5000, 40000]  # words: block edges, and several blocks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3])
def test_kernel_equals_torch_rand_and_leaves_the_same_generator_state(dtype, seed):
    ref, gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for size in SIZES:  # consecutive calls: every offset into a state block
        want = torch.rand(size, generator=ref, dtype=dtype)
        got = torch.full((size,), float("nan"), dtype=dtype)
        torch.ops.kdekit.uniform_(got, gen)
        assert torch.equal(got, want), size
        assert torch.equal(gen.get_state(), ref.get_state()), size
    # the generator goes on as torch's would, for other distributions too
    assert torch.equal(torch.randn(5, generator=gen), torch.randn(5, generator=ref))
    assert torch.equal(torch.rand(700, generator=gen, dtype=dtype), torch.rand(700, generator=ref, dtype=dtype))


def test_default_generator_and_multidimensional_output():
    torch.manual_seed(123)
    want = torch.rand(3, 5, 7)
    torch.manual_seed(123)
    got = torch.full((3, 5, 7), float("nan"))
    torch.ops.kdekit.uniform_(got, None)
    assert torch.equal(got, want)
    after_kernel = torch.rand(9)
    torch.manual_seed(123)
    torch.rand(105)
    assert torch.equal(after_kernel, torch.rand(9))


def test_kernel_check_passes_with_this_torch():
    assert uniform.kernel_matches_torch()


@pytest.mark.parametrize("name", ["torch", "cpp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_rand_equals_torch_rand_on_every_backend_and_dtype(name, dtype):
    got = uniform.rand((4, 50, 9), torch.Generator().manual_seed(5), torch.device("cpu"), name == "cpp", dtype)
    want = torch.rand(4, 50, 9, generator=torch.Generator().manual_seed(5), dtype=dtype)
    assert got.dtype == dtype and torch.equal(got, want)


def test_bad_arguments_name_the_argument():
    with pytest.raises(RuntimeError, match="self must be float32 or float64"):
        torch.ops.kdekit.uniform_(torch.zeros(4, dtype=torch.int32), None)
    with pytest.raises(RuntimeError, match="self must be contiguous"):
        torch.ops.kdekit.uniform_(torch.zeros(4, 4).t(), None)
    empty = torch.zeros(0)
    torch.ops.kdekit.uniform_(empty, None)  # nothing drawn, nothing to fill
    assert empty.numel() == 0
