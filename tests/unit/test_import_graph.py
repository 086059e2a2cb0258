"""The package's layers only point down: no import cycles, and the compiler never imports the layers above it.

Every module under ``src/webllm_widget`` is parsed with ``ast`` (nothing is imported), and every import in
it counts: at module level, inside functions and methods, relative or absolute. An import inside a function
still makes the module depend on the one it names; hiding a cycle there only moves the failure to run time.
An import under ``if TYPE_CHECKING:`` counts too: a type checker follows it, and a type-only back reference
is a cycle in the design all the same.

Layers, top to bottom (a layer may import the ones below it, never one above):

    cli                    every subcommand
    widgets/, headless/    the notebook widgets; the engine in headless Chromium and the terminal chat
    inside/                a model library opened up for teaching (profiles, kernel sources, schedule experiments)
    models/                the model catalogue, model folders as the page sees them, the device policy
    compile/               checkpoint -> model folder; knows nothing of models/, widgets/, headless/, cli
    the rest               errors, cache, protocol, blobs, the server route, the browser launcher
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = "webllm_widget"
ROOT = Path(__file__).resolve().parents[2] / "src" / PKG

#: For each layer (a subpackage or module under webllm_widget), the layers it must never import.
FORBIDDEN = {
    "compile": ("models", "inside", "widgets", "headless", "cli"),
    "models": ("widgets", "headless", "inside", "cli"),
    "inside": ("widgets", "headless", "cli"),
    "widgets": ("headless", "cli"),
    "headless": ("widgets", "cli"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, *, typing: bool = True) -> list[tuple[str, tuple[str, ...]]]:
    """Every import in ``path`` as (the module named, the names taken from it); relative ones made absolute.

    ``typing=False`` leaves out the imports under ``if TYPE_CHECKING:`` (they never run)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                 for stmt in node.body for n in ast.walk(stmt)}
    out: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if not typing and id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out.extend((a.name, ()) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, tuple(a.name for a in node.names)))
    return out


def import_graph(*, typing: bool = True) -> dict[str, set[str]]:
    """Edges between the package's own modules.

    ``from a.b import c`` depends on the module a.b.c when there is one, else on a.b; ``import a.b.c``
    depends on a.b.c. Both also run the __init__ of every package above the target, which counts too,
    except a package that holds the importing module: Python has already run it, and its __init__
    importing its own submodules lazily (``webllm_widget.Chat``) is not a cycle. ``typing=False``: without the
    imports under ``if TYPE_CHECKING:``.
    """
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name in mods:
        deps: set[str] = set()
        for target, names in imports_of(name, mods[name], typing=typing):
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
            ends = submodules if submodules and len(submodules) == len(names) else [target] + submodules
            for end in ends:
                parts = end.split(".")
                for i in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:i])
                    implicit = i < len(parts)
                    if prefix not in mods or prefix == name:
                        continue
                    if implicit and name.startswith(prefix + "."):
                        continue
                    deps.add(prefix)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The walker itself: function-level, relative (one and two dots) and absolute imports all count; type-only
    imports are told apart."""
    pkg = tmp_path / PKG
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import x\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from ..b import y\n    import webllm_widget.c\n"
                                      "if TYPE_CHECKING:\n    from .. import d\n")
    assert set(imports_of(f"{PKG}.sub.a", pkg / "sub" / "a.py")) == {(PKG, ("d",)), (f"{PKG}.b", ("y",)), (f"{PKG}.c", ())}
    assert imports_of(f"{PKG}.sub.a", pkg / "sub" / "a.py", typing=False) == [(f"{PKG}.b", ("y",)), (f"{PKG}.c", ())]
    assert imports_of(f"{PKG}.sub", pkg / "sub" / "__init__.py") == [(f"{PKG}.sub.a", ("x",))]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30, "the walker found too few modules; is ROOT right?"
    found = cycles(graph)
    detail = []
    for comp in found:
        members = set(comp)
        detail.append(" | ".join(f"{m} -> {', '.join(sorted(graph[m] & members))}" for m in comp))
    assert not found, "import cycles (module -> the members of its cycle it imports):\n  " + "\n  ".join(detail)


def top_level_names(path: Path) -> set[str] | None:
    """Names a module binds at import time (None when it has a module ``__getattr__``: anything may exist)."""
    names: set[str] = set()

    def visit(body) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                for extra in (getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                    visit(extra)
                for h in getattr(node, "handlers", []):
                    visit(h.body)

    visit(ast.parse(path.read_text(), filename=str(path)).body)
    return None if "__getattr__" in names else names


def _missing_imports(files: dict[str, Path]) -> list[str]:
    mods = modules()
    bound = {m: top_level_names(p) for m, p in mods.items()}
    bad = []
    for name, path in files.items():
        for target, taken in imports_of(name, path):
            if not (target == PKG or target.startswith(PKG + ".")):
                continue
            if target not in mods:
                bad.append(f"{name} imports {target}, which does not exist")
                continue
            have = bound[target]
            for n in taken:
                if n != "*" and have is not None and n not in have and f"{target}.{n}" not in mods:
                    bad.append(f"{name} imports {n} from {target}, which has no such name")
    return sorted(bad)


def test_every_import_of_the_package_names_something_that_exists():
    """A moved module or function leaves no import behind (one inside a function fails only when it runs)."""
    bad = _missing_imports(modules())
    assert not bad, "\n  ".join(["imports of what does not exist:"] + bad)


def test_tests_and_benchmarks_import_only_what_the_package_has():
    repo = ROOT.parents[1]
    files = {str(p.relative_to(repo)): p for folder in ("tests", "bench") for p in sorted((repo / folder).rglob("*.py"))
             if "node_modules" not in p.parts}
    assert len(files) > 20
    bad = _missing_imports(files)
    assert not bad, "\n  ".join(["imports of what does not exist:"] + bad)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_only_import_downwards(layer):
    graph = import_graph()
    bad = sorted(f"{m} imports {d}" for m, deps in graph.items() if _layer(m) == layer
                 for d in deps if _layer(d) in FORBIDDEN[layer])
    assert not bad, f"{layer}/ must not import {', '.join(FORBIDDEN[layer])}:\n  " + "\n  ".join(bad)


def test_the_base_modules_import_no_layer_above_them():
    """errors, cache, protocol, blobs, server, browser: everything else builds on them."""
    graph = import_graph()
    above = set(FORBIDDEN) | {"cli"}
    base = [m for m in graph if _layer(m) not in above and _layer(m) is not None]
    assert base, "no base modules found"
    bad = sorted(f"{m} imports {d}" for m in base for d in graph[m] if _layer(d) in above)
    assert not bad, "the base modules must not import the layers above them:\n  " + "\n  ".join(bad)
