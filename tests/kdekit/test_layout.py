"""Layout rules of the code base, checked on the source: short positional signatures in ``kdekit/ops``, only kdekit's
public API used by ``sermodels/`` and ``bench/``, and the Python mirror of the C++ solver's status codes."""
import ast
import pathlib
import re

import kdekit
from kdekit.ops.diffusion_kde.status import KernelStatus

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_POSITIONAL = 6


def _python_files(*folders):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _is_triton_kernel(fn: ast.AST) -> bool:
    """Decorated with ``@triton.jit`` / ``@triton.jit(...)`` or kdekit's ``@triton_jit``."""
    for dec in fn.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if ast.unparse(target) in ("triton.jit", "triton_jit"):
            return True
    return False


def _positional_counts(tree: ast.Module):
    """``(qualified name, positional parameters, line)`` of every function and method in ``tree``, nested ones included;
    a method's ``self``/``cls`` (the first parameter of a function defined in a class body, unless it is a
    staticmethod) is not counted: callers never pass it."""
    out = []

    def visit(node, prefix, in_class):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", True)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = child.args
                n = len(args.posonlyargs) + len(args.args)
                static = any(ast.unparse(d) == "staticmethod" for d in child.decorator_list)
                if in_class and not static and n:
                    n -= 1
                if not _is_triton_kernel(child):
                    out.append((f"{prefix}{child.name}", n, child.lineno))
                visit(child, f"{prefix}{child.name}.", False)
            else:
                visit(child, prefix, in_class)

    visit(tree, "", False)
    return out


def test_no_function_in_ops_takes_more_than_six_positional_parameters():
    """Every function in ``kdekit/ops/`` (recursively, nested functions and methods included) takes at most 6
    positional parameters (positional-only plus positional-or-keyword; keyword-only parameters after ``*`` are not
    counted, nor a method's ``self``/``cls``). Excluded: Triton kernels (``@triton.jit``, kdekit's ``@triton_jit``),
    whose signature is the launch's flat list of pointers, sizes, strides and constexprs."""
    violations = []
    for path in _python_files("kdekit/ops"):
        for name, n, line in _positional_counts(ast.parse(path.read_text(), str(path))):
            if n > MAX_POSITIONAL:
                violations.append(f"{path.relative_to(ROOT)}:{line}: {name} ({n} positional)")
    assert not violations, f"{len(violations)} function(s) with more than {MAX_POSITIONAL} positional parameters:\n" \
        + "\n".join(violations)


# kdekit's public API: the package itself (the names of kdekit.__all__, which includes the module kdekit.nn), kdekit.nn,
# kdekit.compat (the drop-in for kde_diffusion, whose kde1d/kde2d kdekit re-exports) and kdekit.metrics (the
# torchmetrics Metric: documented, but not imported by kdekit because it needs torchmetrics). Every other module
# (kdekit.ops.*, kdekit.labels, kdekit._ext, ...) is an implementation detail.
PUBLIC_MODULES = {"kdekit", "kdekit.nn", "kdekit.compat", "kdekit.metrics"}


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _public_name(module: str, name: str) -> bool:
    """``name`` may be taken from the public module ``module``: in ``kdekit.__all__`` for the package, else not
    underscored (and in the module's ``__all__`` where it declares one); dunder metadata (``__version__``) always."""
    if _is_dunder(name):
        return True
    if module == "kdekit":
        return name in kdekit.__all__
    if name.startswith("_"):
        return False
    declared = re.search(r"^__all__\s*=\s*\[([^\]]*)\]", (ROOT / (module.replace(".", "/") + ".py")).read_text(),
                         re.M)
    return declared is None or f'"{name}"' in declared.group(1) or f"'{name}'" in declared.group(1)


def _private_uses(path: pathlib.Path):
    """``(line, what)`` for every import from kdekit in ``path`` that names a non-public module or name, and every
    attribute of a bound ``kdekit`` module (``import kdekit [as k]``; ``k.attr``) that is not public."""
    tree = ast.parse(path.read_text(), str(path))
    bound = set()  # local names of the kdekit package
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "kdekit" or alias.name.startswith("kdekit."):
                    if alias.name not in PUBLIC_MODULES:
                        found.append((node.lineno, f"import {alias.name}"))
                    if alias.asname is None or alias.name == "kdekit":
                        bound.add(alias.asname or "kdekit")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "kdekit" or node.module.startswith("kdekit.")):
            if node.module not in PUBLIC_MODULES:
                found.append((node.lineno, f"from {node.module} import {', '.join(a.name for a in node.names)}"))
                continue
            for alias in node.names:
                public = _public_name(node.module, alias.name) or f"{node.module}.{alias.name}" in PUBLIC_MODULES
                if not public:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            if not (_public_name("kdekit", node.attr) or f"kdekit.{node.attr}" in PUBLIC_MODULES):
                found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return sorted(set(found))


def test_sermodels_and_bench_use_only_kdekit_public_api():
    """``sermodels/`` and ``bench/`` import only public kdekit modules (``kdekit``, ``kdekit.nn``, ``kdekit.compat``,
    ``kdekit.metrics``) and public names: from the package, the names of ``kdekit.__all__``; from the other public
    modules, names without a leading underscore (within their ``__all__``); dunder metadata such as ``__version__``.
    An attribute of ``import kdekit`` (``kdekit.x``) follows the same rule. Dynamic imports are not seen."""
    violations = [f"{path.relative_to(ROOT)}:{line}: {what}"
                  for path in _python_files("sermodels", "bench") for line, what in _private_uses(path)]
    assert not violations, f"{len(violations)} use(s) of kdekit outside its public API:\n" + "\n".join(violations)


def _cpp_enum(text: str, name: str):
    """``[(enumerator, value)]`` of ``enum name [: type] { ... }`` in C++ source ``text`` (implicit values count on
    from the previous one, as in C++)."""
    match = re.search(rf"enum\s+(?:class\s+)?{name}\s*(?::\s*[\w:]+)?\s*\{{([^}}]*)\}}", text)
    assert match, f"enum {name} not found"
    body = re.sub(r"//[^\n]*|/\*.*?\*/", "", match.group(1), flags=re.S)
    entries, value = [], -1
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, _, expr = item.partition("=")
        value = int(expr.strip(), 0) if expr.strip() else value + 1
        entries.append((key.strip(), value))
    return entries


def _python_name(cpp_name: str) -> str:
    """kOk -> OK, kNoSignChange -> NO_SIGN_CHANGE."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cpp_name.removeprefix("k")).upper()


def test_kernel_status_mirrors_the_cpp_status_enum():
    """``KernelStatus`` (kdekit/ops/diffusion_kde/status.py) has the members of ``enum Status`` in
    csrc/common/brentq.h, with the same values, in the same order (``kOk`` -> ``OK``, ``kNoSignChange`` ->
    ``NO_SIGN_CHANGE``)."""
    cpp = _cpp_enum((ROOT / "csrc" / "common" / "brentq.h").read_text(), "Status")
    assert len(cpp) >= 2, cpp
    assert [(_python_name(k), v) for k, v in cpp] == [(m.name, int(m)) for m in KernelStatus]


def test_the_layout_parsers_find_what_they_look_for(tmp_path):
    """The checks above would pass vacuously if their parsers found nothing: they see a known violation, known
    private imports and a known enum."""
    tree = ast.parse("class A:\n    def f(self, a, b, c, d, e, g, /, h=1, *, k=2):\n"
                     "        def inner(a, b, c, d, e, f, g):\n            pass\n"
                     "@triton.jit\ndef kern(a, b, c, d, e, f, g, h):\n    pass\n")
    assert _positional_counts(tree) == [("A.f", 7, 2), ("A.f.inner", 7, 3)]
    assert len(list(_python_files("kdekit/ops"))) >= 10 and len(list(_python_files("sermodels", "bench"))) >= 10
    assert _public_name("kdekit", "ccc") and not _public_name("kdekit", "_backend")
    assert not _public_name("kdekit", "select") and _public_name("kdekit", "__version__")
    assert _cpp_enum("enum Status : int32_t { kA = 2, kB, /* c */ kC = 0x7 };", "Status") == [("kA", 2), ("kB", 3),
                                                                                               ("kC", 7)]
    assert _python_name("kNotConverged") == "NOT_CONVERGED"
    sample = tmp_path / "sample.py"
    sample.write_text("import kdekit as k\nimport kdekit.nn\nfrom kdekit import ccc, __version__\n"
                      "from kdekit.ops._checks import check_bins\nfrom kdekit import select\nimport kdekit._ext\n"
                      "from kdekit.nn import _private\nk.jsd(1, 2)\nk._backend.select\nkdekit.nn.CCCLoss\n")
    assert [what for _, what in _private_uses(sample)] == [
        "from kdekit.ops._checks import check_bins", "from kdekit import select", "import kdekit._ext",
        "from kdekit.nn import _private", "k._backend"]
