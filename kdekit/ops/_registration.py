"""Autograd of kdekit's custom ops: one mechanism for the C++ and Triton ops (their backward is its own op)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch


def call_without_autograd(op, *args):
    """``op(*args)`` for a call that records no gradient (the caller checked), dispatched below autograd: skips the
    Python wrapper that ``register_autograd`` puts in front of an op (~5 us a call, which a metric on small inputs
    notices). The result has no ``grad_fn``."""
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


def register_backward_op(op, backward_op, differentiable: Sequence[int], saved: Optional[Sequence[int]] = None):
    """Autograd of custom op ``op`` through its backward op, for ops whose non-tensor arguments follow the tensors.

    ``backward_op(grad, *saved tensor inputs, *non-tensor inputs, **keyword-only inputs)`` (the op's keyword-only
    parameters by the same names) returns the gradients (one tensor or a tuple) of
    the inputs at positions ``differentiable``, in that order; each is cast to its input's dtype, the other inputs
    get None. ``saved``: positions of the tensor inputs to save and pass (default: every tensor input).
    """
    def setup_context(ctx, inputs, output, keyword_only_inputs=None):
        keep = [i for i, a in enumerate(inputs) if isinstance(a, torch.Tensor)] if saved is None else saved
        ctx.save_for_backward(*(inputs[i] for i in keep))
        ctx.params = [a for a in inputs if not isinstance(a, torch.Tensor)]
        ctx.named = keyword_only_inputs or {}
        ctx.dtypes = [a.dtype if isinstance(a, torch.Tensor) else None for a in inputs]

    def backward(ctx, grad):
        grads = backward_op(grad, *ctx.saved_tensors, *ctx.params, **ctx.named)
        out = [None] * len(ctx.dtypes)
        for i, g in zip(differentiable, grads if isinstance(grads, (tuple, list)) else (grads,)):
            out[i] = g.to(ctx.dtypes[i])
        return tuple(out)

    torch.library.register_autograd(op, backward, setup_context=setup_context)
