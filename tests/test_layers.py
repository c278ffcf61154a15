"""Layers that point one way: the import graph of feddm_hpc, read from the source with ast
(module-level and function-level imports alike: a late import hides a cycle, it does not break it).

- no import cycle between modules, nor between subpackages (feddm_hpc.config, feddm_hpc.federation,
  ...; a top-level module such as feddm_hpc.errors is its own node), once the known back edges of
  ALLOWED_BACK_EDGES are left out;
- feddm_hpc/config imports nothing from the package but feddm_hpc.errors, so validating a config
  loads neither torch nor the federation layer (checked in a fresh interpreter too).

An import `from feddm_hpc.a import b` is an edge to feddm_hpc.a.b when that is a module, else to
feddm_hpc.a; the implicit import of a parent package is not an edge.
"""
from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys

from conftest import ROOT

PKG = "feddm_hpc"
CONFIG = f"{PKG}.config"
CONFIG_MAY_IMPORT = {f"{PKG}.errors"}

# Edges (importer, imported) that close a cycle and need more than a cheap fix, each with why.
# Drop an entry once its cycle is gone (test_allowed_back_edges_still_close_a_cycle says when).
ALLOWED_BACK_EDGES = {
    (f"{PKG}.evaluation.evaluate", f"{PKG}.federation.setup"):
        "evaluate_run builds its model with federation.setup.build_model (seeded init), while "
        "federation.callbacks runs evaluate_run: build_model belongs below both (diffusion), a "
        "move that waits for the low-rank work in setup.py and diffusion/",
}


def modules() -> dict:
    """Dotted module name -> source path, for every module of the package."""
    out = {}
    for path in sorted((ROOT / PKG).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(target: str, mods: dict) -> str | None:
    while target not in mods and "." in target:
        target = target.rsplit(".", 1)[0]
    return target if target in mods else None


@functools.lru_cache(maxsize=None)
def _graph() -> dict:
    mods = modules()
    graph = {}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y, from .. import z
                    up = package[: len(package) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                resolved = _resolve(target, mods) if target.split(".")[0] == PKG else None
                if resolved is not None and resolved != name:
                    edges.setdefault(resolved, node.lineno)
        graph[name] = edges
    return graph


def import_graph() -> dict:
    """module -> {imported package module: line of its first import} (a fresh copy)."""
    return {a: dict(edges) for a, edges in _graph().items()}


def _pruned(graph: dict) -> dict:
    return {a: {b: line for b, line in edges.items() if (a, b) not in ALLOWED_BACK_EDGES}
            for a, edges in graph.items()}


def subpackage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def subpackage_graph(graph: dict) -> dict:
    """subpackage -> {subpackage: [(importer, imported, line)]} over edges that cross subpackages."""
    out = {}
    for a, edges in graph.items():
        for b, line in edges.items():
            if subpackage(a) != subpackage(b):
                out.setdefault(subpackage(a), {}).setdefault(subpackage(b), []).append((a, b, line))
    return out


def find_cycle(graph: dict) -> list | None:
    """One cycle as a path [n0, n1, ..., n0], or None (iterative depth-first search)."""
    state = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def _describe(cycle: list, graph: dict) -> str:
    return " -> ".join(cycle) + "  (" + "; ".join(
        f"{a} line {graph[a][b]}" for a, b in zip(cycle, cycle[1:])) + ")"


def test_the_graph_sees_module_and_function_level_imports():
    graph = import_graph()
    assert f"{PKG}.errors" in graph[f"{CONFIG}.choices"]                     # module level
    assert f"{PKG}.evaluation.evaluate" in graph[f"{PKG}.federation.callbacks"]  # inside a method
    assert f"{PKG}.compression.lossless" in graph[f"{PKG}.compression.base"]     # from pkg import module


def test_no_import_cycle_between_modules():
    graph = _pruned(import_graph())
    cycle = find_cycle(graph)
    assert cycle is None, ("import cycle between modules (late imports included): "
                           + _describe(cycle, graph) + "; break it, or list one edge in "
                           "ALLOWED_BACK_EDGES with why")


def test_no_import_cycle_between_subpackages():
    crossing = subpackage_graph(_pruned(import_graph()))
    cycle = find_cycle(crossing)
    if cycle is not None:
        hops = ["{} -> {} ({})".format(a, b, ", ".join(f"{x} imports {y} line {line}"
                                                        for x, y, line in crossing[a][b][:3]))
                for a, b in zip(cycle, cycle[1:])]
        raise AssertionError("import cycle between subpackages: " + " -> ".join(cycle) + "\n  "
                             + "\n  ".join(hops) + "\nbreak it, or list one module edge in "
                             "ALLOWED_BACK_EDGES with why")


def _reaches(graph: dict, start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_allowed_back_edges_still_close_a_cycle():
    graph = import_graph()
    crossing = subpackage_graph(graph)

    def closes_a_cycle(a, b):
        return _reaches(graph, b, a) or (subpackage(a) != subpackage(b)
                                         and _reaches(crossing, subpackage(b), subpackage(a)))

    stale = [edge for edge in ALLOWED_BACK_EDGES
             if edge[1] not in graph.get(edge[0], {}) or not closes_a_cycle(*edge)]
    assert not stale, f"remove these from ALLOWED_BACK_EDGES, their cycle is gone: {stale}"


def test_config_imports_nothing_from_the_package_but_errors():
    graph = import_graph()
    bad = sorted(f"{a} imports {b} (line {line})" for a, edges in graph.items()
                 if a == CONFIG or a.startswith(CONFIG + ".")
                 for b, line in edges.items()
                 if not (b == CONFIG or b.startswith(CONFIG + ".")) and b not in CONFIG_MAY_IMPORT)
    assert not bad, ("feddm_hpc/config may import only feddm_hpc.errors from the package (keep what "
                     "a codec or strategy requires as data in config, or check it where that is "
                     "built): " + "; ".join(bad))


VALIDATE_EVERYTHING = f"""
import json, sys
from feddm_hpc.config import load_config
from feddm_hpc.errors import ConfigError
tiny = {str(ROOT / "configs" / "tiny.yaml")!r}
load_config(tiny, ["federation.algorithm=scaffold", "client.optimizer=sgd", "client.momentum=0",
                   "client.grad_clip=null", "compression.uplink=topk", "compression.lossless=zlib",
                   "compression.error_feedback=true"])
load_config(tiny, ["compression.uplink=quant", "compression.bits=4", "privacy.clip_norm=1.0",
                   "privacy.noise_multiplier=1.0"])
try:
    load_config(tiny, ["federation.algorithm=scaffold", "client.optimizer=adam"])
    refused = None
except ConfigError as exc:
    refused = str(exc)
print(json.dumps({{"refused": refused, "modules": sorted(sys.modules)}}))
"""


def test_validating_a_config_loads_neither_torch_nor_other_layers():
    out = subprocess.run([sys.executable, "-c", VALIDATE_EVERYTHING], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["refused"] and result["refused"].startswith("client.optimizer: scaffold's")
    loaded = set(result["modules"])
    heavy = sorted(loaded & {"torch", "numpy", "mpi4py", "h5py", "zstandard"})
    assert not heavy, f"validating a config imported {heavy}"
    ours = sorted(m for m in loaded if m.split(".")[0] == PKG and m != PKG
                  and m != CONFIG and not m.startswith(CONFIG + ".") and m not in CONFIG_MAY_IMPORT)
    assert not ours, f"validating a config imported {ours}"
