"""Optional Triton: ``triton``/``tl`` (None when not installed) and :func:`triton_jit` for kernels defined at import.

Without triton, :func:`kdekit._backend.select` never picks the ``triton`` backend and the undecorated functions are
never launched. Set ``TRITON_INTERPRET=1`` before importing kdekit to run the kernels on CPU tensors.
"""
try:
    import triton
    import triton.language as tl
except ImportError:
    triton = tl = None


def triton_jit(fn):
    """``triton.jit(fn)``, or ``fn`` itself when triton is not installed (it is then never launched).

    Decorated at import: set ``TRITON_INTERPRET=1`` before importing kdekit to run the kernels on CPU tensors.
    """
    return fn if triton is None else triton.jit(fn)
