"""The package's import graph: no cycles, and nothing in the core (math, networks, tasks,
training, data, eval) imports the layers above it (run folders, loading, reporting, the CLI and
its commands, assembly, the registry, the Python API, the benchmarks). Imports inside functions
count: they only hide a cycle, they do not remove it."""

from __future__ import annotations

import ast
from pathlib import Path

import diffusionblocks

ROOT = Path(diffusionblocks.__file__).parent
PACKAGE = "diffusionblocks"
CORE = ("diffusion", "networks", "tasks", "training", "data", "eval")
TOP = (
    "runs",
    "cli",
    "assemble",
    "registry",
    "api",
    "loading",
    "commands",
    "reporting",
    "bench",
    "hub",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """Package modules that ``path`` imports (and the packages above them, which Python runs
    first), at module level or inside functions; the package root itself is left out (only
    ``__version__`` is taken from it)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                sub = f"{origin}.{alias.name}"
                targets.append(sub if is_module(sub) else origin)
        for target in targets:
            if target.split(".")[0] != PACKAGE:
                continue
            parts = target.split(".")
            for k in range(2, len(parts) + 1):  # the module and the packages above it...
                name = ".".join(parts[:k])
                if k == len(parts) or not me.startswith(name + "."):  # ...not yet importing
                    found.add(name)
    found.discard(me)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in ROOT.rglob("*.py")}


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_core_never_imports_the_layers_above_it():
    bad = []
    for module, targets in graph().items():
        if module.split(".")[1:2] and module.split(".")[1] in CORE:
            bad += [
                f"{module} -> {t}" for t in targets if t.split(".")[1:2] and t.split(".")[1] in TOP
            ]
    assert not bad, "upward imports: " + ", ".join(sorted(bad))


def test_the_checker_sees_relative_and_nested_imports(tmp_path):
    """The graph builder itself: a relative import inside a function is found."""
    edges = graph()
    assert "diffusionblocks.training.checkpoint" in edges["diffusionblocks.training.trainer"]
    assert "diffusionblocks.tasks.base" in edges["diffusionblocks.tasks.classification"]
    assert "diffusionblocks.data" in edges["diffusionblocks.tasks.classification"]  # its package
    assert "diffusionblocks.tasks" not in edges["diffusionblocks.tasks.classification"]  # own


def test_cli_only_parses_and_dispatches():
    """cli.py holds the parser and the error handling; every subcommand lives in commands/."""
    tree = ast.parse((Path(diffusionblocks.__file__).parent / "cli.py").read_text())
    functions = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert functions == ["build_parser", "main"]
