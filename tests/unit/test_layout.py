"""The package layout is the architecture: checked from the source and the built wheel.

- the engine core imports neither the tools (``dev``, ``bench``) nor the Faust worker;
- no module imports itself back through a chain (the bundled plugins included);
- the production wheel holds the engine, the contract, the registry, the worker, ops and
  the test kit, and not the tools (they come with the ``dev`` and ``bench`` extras).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"streamproc": ROOT / "streamproc"} | {
    path.name: path for path in sorted((ROOT / "plugins").glob("*/streamproc_*")) if path.is_dir()
}
TOOLS = ("streamproc.dev", "streamproc.bench")


def module_files() -> Iterator[tuple[str, Path]]:
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((package, *parts)), path


def imports_of(module: str, path: Path) -> set[str]:
    """Modules named by ``import``/``from`` statements, outside ``if TYPE_CHECKING`` blocks."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def graph() -> dict[str, set[str]]:
    modules = dict(module_files())
    return {name: {m for m in imports_of(name, path) if m in modules and m != name} for name, path in modules.items()}


def test_the_engine_core_imports_neither_tools_nor_the_worker() -> None:
    offenders = {
        (module, imported)
        for module, path in module_files()
        if module.startswith(("streamproc.engine", "streamproc.ops", "streamproc.registry", "streamproc.plugin"))
        for imported in imports_of(module, path)
        if imported.startswith((*TOOLS, "streamproc.worker", "streamproc.cli", "faust"))
    }
    assert not offenders


def test_no_module_imports_itself_through_a_cycle() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_production_wheel_holds_the_engine_and_not_the_tools(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp_path, ROOT],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("streamproc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "streamproc/plugin.py",
        "streamproc/registry.py",
        "streamproc/worker.py",
        "streamproc/kafka_clients.py",
        "streamproc/engine/engine.py",
        "streamproc/engine/delivery.py",
        "streamproc/ops/health.py",
        "streamproc/testing/harness.py",
    ):
        assert required in names, f"{required} missing from {wheel.name}"
    tools = sorted(n for n in names if n.startswith(("streamproc/dev/", "streamproc/bench/")))
    assert not tools, f"tools in the production wheel: {tools}"
