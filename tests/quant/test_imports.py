"""The quant package's import graph (module-level *and* function-level imports) has no
cycle, quant never imports qaccel.hw (SPEC layering), and the public API stays importable
from ``qaccel.quant``."""

import ast
import pathlib

import qaccel.quant as quant_pkg

PKG = pathlib.Path(quant_pkg.__file__).parent
PREFIX = "qaccel.quant"


def _targets(module: str, node: ast.AST) -> list[str]:
    """quant modules (names relative to the package, ``__init__`` for the package) that an
    import statement in ``module`` refers to, plus ``"qaccel.hw..."`` names."""
    out = []
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.name.startswith(PREFIX + "."):
                out.append(a.name[len(PREFIX) + 1:].split(".")[0])
            elif a.name == PREFIX:
                out.append("__init__")
            elif a.name.startswith("qaccel.hw"):
                out.append(a.name)
        return out
    if not isinstance(node, ast.ImportFrom):
        return out
    if node.level:                                      # relative: from .x import y
        base = "" if node.level == 1 else None
        if base is None:
            return out                                  # outside the package
        mod = node.module
    elif node.module == "qaccel":
        mod = None
        names = [a.name for a in node.names]
        if "quant" in names:
            out.append("__init__")
        out += [f"qaccel.{n}" for n in names if n == "hw"]
        return out
    elif node.module and node.module.startswith(PREFIX):
        mod = node.module[len(PREFIX) + 1:] or None
    else:
        if node.module and node.module.startswith("qaccel.hw"):
            out.append(node.module)
        return out
    if mod:
        out.append(mod.split(".")[0])
    else:                                   # from . import x / from qaccel.quant import x
        for a in node.names:
            out.append(a.name if (PKG / f"{a.name}.py").exists() else "__init__")
    return out


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PKG.glob("*.py")):
        name = path.stem
        tree = ast.parse(path.read_text(), str(path))
        deps = set()
        for node in ast.walk(tree):
            deps.update(_targets(name, node))
        deps.discard(name)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if d not in graph:
                continue
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    # the parser sees function-level imports and every import form
    src = ("def f():\n    from .pipeline import run_batch\n"
           "from qaccel.quant.graph import trace\nfrom . import cle\n"
           "from qaccel import quant\nimport qaccel.quant.ranges\n")
    deps = {d for node in ast.walk(ast.parse(src)) for d in _targets("m", node)}
    assert deps == {"pipeline", "graph", "cle", "__init__", "ranges"}


def test_quant_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"pipeline", "graph", "bias_correction", "calib_data", "summary"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # the stages the pipeline orchestrates never import it back
    users = sorted(n for n, deps in graph.items() if "pipeline" in deps)
    assert users == ["__init__", "qat", "sensitivity"]     # users of the pipeline


def test_quant_never_imports_hw():
    hw = {n: sorted(d for d in deps if d.startswith("qaccel.hw"))
          for n, deps in import_graph().items()}
    assert {n: d for n, d in hw.items() if d} == {}


def test_public_api():
    from qaccel.quant import (  # noqa: F401
        FallbackWarning,
        LayerOverride,
        QuantConfig,
        QuantInfo,
        QuantSummary,
        export,
        quantize,
        refresh_scales,
        run_batch,
        sensitivity_report,
        summarize,
    )
    assert set(quant_pkg.__all__) >= {"quantize", "QuantConfig", "export", "LayerOverride",
                                      "QuantSummary", "summarize", "FallbackWarning"}
