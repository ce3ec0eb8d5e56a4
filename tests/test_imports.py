"""The package's import structure: no module-level cycles, and no stage importing a stage above it.

Every module of src/shadowllm is parsed with ast (nothing is imported). Module-level imports form the graph the
cycle check reads; imports inside functions are lazy (they run after every module has loaded), so they may close
a loop without breaking an import and are left out of the cycle check. The layer check reads both: a lazy import
is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "shadowllm"

# lowest first; a module may import its own layer and the layers below it. An entry names a subpackage or module
# under shadowllm (the longest entry that prefixes a module decides); every stage's command module (*.cli) is a
# command. `data` is the shipped data (torch-free; config checks task names against it); its fetchers load models.
LAYERS = [
    {"layout", "shapes", "io", "provenance", "defaults", "paper", "config", "data"},   # data, no torch
    {"adapter", "loading", "data.download", "data.convert_gguf", "train"},              # models
    {"importance", "masks"},
    {"predictors"},
    {"sparse", "evaluate", "ablations"},
    {"figures", "report"},
    {"cli", "workflow_cli", "audit"},                                                    # commands
]
COMMANDS = len(LAYERS) - 1


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for f in sorted((SRC / PKG).rglob("*.py")):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The package modules one import statement loads (a `from pkg import name` names a submodule or pkg)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == PKG]
    if node.level:
        base = module.split(".") if _is_package(module) else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != PKG:
        return []
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]


def _main(node) -> bool:
    """`if __name__ == "__main__":` runs after the module has loaded, as a function would."""
    return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test)


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(module-level imports, imports inside functions) of one module, as package module names."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    top, lazy = set(), set()

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or _main(child) or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                      ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (lazy if inner else top).update(t for t in _resolve(module, child) if t in MODULES)
            visit(child, inner)

    visit(tree, False)
    return top - {module}, lazy - {module} - top


GRAPH = {m: _imports(m) for m in MODULES}


def layer(module: str) -> int:
    """The layer of a package module: that of the longest LAYERS entry prefixing it; a stage's cli is a command."""
    if module.split(".")[-1] == "cli":
        return COMMANDS
    parts = module.split(".")[1:]
    for n in range(len(parts), 0, -1):
        for i, names in enumerate(LAYERS):
            if ".".join(parts[:n]) in names:
                return i
    raise AssertionError(f"module {module!r} is in no layer of LAYERS; give it one")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected component of more than one module (Tarjan), members sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _package_edge(a: str, b: str) -> bool:
    """a package's __init__ importing its own submodule (or the reverse) is how packages load, not a cycle."""
    return b.startswith(a + ".") and _is_package(a) or a.startswith(b + ".") and _is_package(b)


def test_every_module_parses_and_has_a_layer():
    assert f"{PKG}.cli" in MODULES and len(MODULES) > 40
    for m in MODULES:
        if m != PKG:
            layer(m)


def test_no_module_level_cycles():
    graph = {m: {t for t in top if not _package_edge(m, t)} for m, (top, _) in GRAPH.items()}
    cycles = _cycles(graph)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_no_upward_imports():
    bad = sorted(f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)}){' lazily' if t in lazy else ''}"
                 for m, (top, lazy) in GRAPH.items() if m != PKG
                 for t in top | lazy if t != PKG and layer(t) > layer(m))
    assert not bad, "\n".join(bad)


def _owner(module: str) -> str:
    """The subpackage (or top-level module) a module belongs to."""
    return module.split(".")[1] if "." in module else module


def test_no_private_names_across_stages_or_from_a_command():
    """`from ..x import _helper` couples a stage to another's internals, and a command module is no library:
    shared code gets a public name in a stage module. Within one subpackage, private helpers may be shared."""
    bad = []
    for m, f in MODULES.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            for a in node.names:
                if not a.name.startswith("_") or a.name.startswith("__"):
                    continue
                for t in _resolve(m, ast.ImportFrom(module=node.module, names=[a], level=node.level)):
                    if _owner(t) != _owner(m) or t.split(".")[-1] == "cli":
                        bad.append(f"{m} imports {a.name} from {t}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("case", ["cycle", "upward"])
def test_the_checks_catch_what_they_look_for(case):
    if case == "cycle":
        assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    else:
        assert layer(f"{PKG}.config") < layer(f"{PKG}.sparse.decoder") < layer(f"{PKG}.ablations.cli")
