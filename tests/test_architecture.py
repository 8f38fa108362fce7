"""The package's shape: one import package `sixn`, and imports between its files that never cycle."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("kernels", "model", "bench", "scaling")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["sixn", *parts])


def sixn_modules() -> dict[str, Path]:
    """Every module of sixn by its dotted name: the root __init__.py and all .py files below the
    four folders."""
    files = [REPO / "__init__.py"] + sorted(p for f in FOLDERS for p in (REPO / f).rglob("*.py"))
    return {_module_name(p): p for p in files}


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def imports_of(name: str, modules: dict[str, Path]) -> set[str]:
    """The sixn modules that module `name` imports anywhere in its file (top level, inside
    functions, under TYPE_CHECKING): `from P import x` counts as P.x when that is a module, else P."""
    tree = ast.parse(modules[name].read_text(), filename=str(modules[name]))
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
        else:
            continue
        for t in targets:
            # `import sixn.a.b` names the module sixn.a.b; keep the longest sixn module it names
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = sixn_modules()
    return {m: imports_of(m, modules) for m in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None (iterative three-colour DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "d"}, "b": set(), "d": {"e"}, "e": {"d"}}) == ["d", "e", "d"]


def test_import_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "sixn.kernels.runtime" in graph["sixn"]                      # from sixn.kernels import runtime
    assert "sixn.bench.counters.base" in graph["sixn.bench.counters"]   # from .base import ...
    assert "sixn.kernels.backends" in graph["sixn.model.gpt"]          # absolute from-import
    assert {"sixn.model.flops", "sixn.kernels.runtime"} <= set().union(*graph.values())
    assert len(graph) > 40


def test_no_import_cycle_between_sixn_files():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def layer(module: str) -> int:
    """The layers of sixn, bottom first; a file imports only from its own layer or those below.

    0 the interpreter switch (kernels.runtime) and the root package that calls it
    1 model.config / model.flops / model.presets / model.memory: shapes, the one FLOP accounting
      and the memory estimate
    2 kernels: the Triton ops and the backend map, whose FLOP formulas come from model.flops
    3 model.gpt and the model package (which re-exports the GPT)
    4 bench core: results I/O, timing, peaks, roofs, the step builder, counters, ddp, plots
    5 scaling: data, training, sweeps, fits, plots
    6 bench.commands and bench.cli: one module per subcommand, and the command line
    """
    p = module.split(".")
    if module in ("sixn", "sixn.kernels.runtime"):
        return 0
    if p[1] == "model" and len(p) > 2 and p[2] in ("config", "flops", "presets", "memory"):
        return 1
    if p[1] == "kernels":
        return 2
    if p[1] == "model":
        return 3
    if p[1] == "bench":
        return 6 if len(p) > 2 and p[2] in ("commands", "cli") else 4
    if p[1] == "scaling":
        return 5
    raise AssertionError(f"{module}: not in a layer of sixn")


def test_imports_flow_one_way():
    graph = import_graph()
    upward = sorted(f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
                    for m, ts in graph.items() for t in ts if layer(t) > layer(m))
    assert not upward, "\n".join(upward)


def test_only_sixn_imports_from_outside_the_checkout(tmp_path):
    """Installed, sixn is one import package: its folders are not top-level packages of their own
    (no `import kernels` / `import model` / ... from outside the checkout)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import importlib.util, sys\n"
            "import sixn.kernels, sixn.model, sixn.bench, sixn.scaling\n"
            "print(sixn.model.__file__)\n"
            f"root = {str(REPO.resolve()) + os.sep!r}\n"
            f"specs = [(n, importlib.util.find_spec(n)) for n in {FOLDERS!r}]\n"
            # another distribution's package of the same name (transformers needs one called
            # `kernels`) is not ours: only a spec inside the checkout would be
            "print([n for n, s in specs if s is not None and str(s.origin or '').startswith(root)])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    where, found = out.stdout.strip().splitlines()
    assert Path(where).resolve() == (REPO / "model" / "__init__.py").resolve()
    assert found == "[]"
    for name in FOLDERS:
        r = subprocess.run([sys.executable, "-c", f"import {name}; print({name}.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert (r.returncode != 0 and "ModuleNotFoundError" in r.stderr) or (
            r.returncode == 0 and not Path(r.stdout.strip()).resolve().is_relative_to(REPO.resolve())), \
            (name, r.stdout, r.stderr)


@pytest.mark.parametrize("name", FOLDERS)
def test_folders_are_subpackages_of_sixn(name):
    import importlib
    mod = importlib.import_module(f"sixn.{name}")
    assert Path(mod.__file__).resolve() == (REPO / name / "__init__.py").resolve()
