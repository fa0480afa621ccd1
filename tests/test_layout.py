"""The package's architecture, checked from the source: which module may import which.

Every import is counted, at module level or inside a function (a lazy import is still a dependency), read with
`ast` from the files, so nothing here depends on what happens to be imported at run time.

Ranks: core 0; output and system 1; the edges (host, net, artifacts, build, kernel, falco) 2; pipeline 3; cli 4.
A module imports its own rank or lower. An edge may import another edge only while the edges' package graph
stays free of cycles. core imports nothing that does I/O, and no driver_loader module outside core. No two
modules import each other, directly or through others.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "driver_loader")

RANKS = {
    "core": 0,
    "output": 1,
    "system": 1,
    "host": 2,
    "net": 2,
    "artifacts": 2,
    "build": 2,
    "kernel": 2,
    "falco": 2,
    "pipeline": 3,
    "cli": 4,
}
EDGE_RANK = 2
# The package itself (its version) and `python -m driver_loader`.
TOP_LEVEL = {"driver_loader": 0, "driver_loader.__main__": 5}

# Libraries (and standard modules) that do I/O or talk to the outside: none of them in core.
CORE_FORBIDDEN = ("requests", "urllib3", "elftools", "structlog", "click", "yaml", "subprocess", "socket", "ctypes")


def _module_name(path: str) -> str:
    relative = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[: -len(".py")].replace(os.sep, ".")
    return relative[: -len(".__init__")] if relative.endswith(".__init__") else relative


def _modules() -> Dict[str, str]:
    found = {}
    for directory, dirnames, filenames in os.walk(PACKAGE_DIR):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for filename in sorted(filenames):
            if filename.endswith(".py"):
                path = os.path.join(directory, filename)
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: str) -> List[Tuple[str, int]]:
    """(imported module, line) for every import statement in the file, wherever it is."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    is_package = path.endswith("__init__.py")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                # `from package import module` imports the module; `from module import name` the module.
                found.append((submodule if submodule in MODULES else source, node.lineno))
    return found


IMPORTS = {name: sorted(set(_imports(name, path)), key=lambda item: (item[1], item[0]))
           for name, path in MODULES.items()}


def _internal(name: str) -> Set[str]:
    return {target for target, _ in IMPORTS[name] if target in MODULES and target != name}


def stage(module: str) -> str:
    """The stage folder of a driver_loader module ('' for the top-level modules)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANKS) else ""


def rank(module: str) -> int:
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    return RANKS[stage(module)]


def test_every_module_is_in_a_stage_with_a_rank():
    unplaced = [m for m in MODULES if m not in TOP_LEVEL and stage(m) not in RANKS]
    assert unplaced == [], f"modules outside the stage folders {sorted(RANKS)}: {unplaced}"


def test_imports_point_down():
    upward = [
        f"{module} (rank {rank(module)}) imports {target} (rank {rank(target)}) at line {line}"
        for module in MODULES
        for target, line in IMPORTS[module]
        if target in MODULES and rank(target) > rank(module)
    ]
    assert upward == [], "imports must point down (cli > pipeline > edges > output/system > core):\n" + "\n".join(
        upward)


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of `graph` with more than one node (each is at least one cycle),
    sorted (Tarjan's algorithm, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components: List[List[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def test_edges_import_each_other_without_a_cycle_between_their_packages():
    graph: Dict[str, Set[str]] = {}
    for module in MODULES:
        if module in TOP_LEVEL or rank(module) != EDGE_RANK:
            continue
        for target in _internal(module):
            if rank(target) == EDGE_RANK and stage(target) != stage(module):
                graph.setdefault(stage(module), set()).add(stage(target))
    cycles = _cycles(graph)
    assert cycles == [], "edge packages that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_module_imports_itself_through_others():
    cycles = _cycles({module: _internal(module) for module in MODULES})
    assert cycles == [], "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


CORE_MODULES = sorted(m for m in MODULES if m not in TOP_LEVEL and stage(m) == "core")


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_does_no_io_and_needs_nothing_outside_core(module):
    bad = []
    for target, line in IMPORTS[module]:
        top = target.split(".")[0]
        if top in CORE_FORBIDDEN:
            bad.append(f"line {line}: {target} (does I/O)")
        elif top == "driver_loader" and target in MODULES and stage(target) != "core":
            bad.append(f"line {line}: {target} (outside core)")
    assert bad == [], f"{module} must stay pure: " + "; ".join(bad)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The rules above are only as good as the import reader: it must see imports inside functions too."""
    source = tmp_path / "sample.py"
    source.write_text("import os\n\ndef later():\n    from driver_loader.core import errors\n    import requests\n")
    assert _imports("driver_loader.core.sample", str(source)) == [
        ("os", 1), ("driver_loader.core.errors", 4), ("requests", 5)]
    relative = tmp_path / "__init__.py"
    relative.write_text("from . import naming\nfrom .errors import LoaderError\n")
    assert _imports("driver_loader.core", str(relative)) == [
        ("driver_loader.core.naming", 1), ("driver_loader.core.errors", 2)]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}) == [
        ["a", "b", "c"], ["d", "e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# -- one home per shared helper ---------------------------------------------------------------------------------------


def _calls(module: str, owner: str, names: Tuple[str, ...]) -> List[int]:
    """Lines where `module` calls `owner.<name>` for one of `names` (e.g. os.replace)."""
    with open(MODULES[module], encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names
            and isinstance(node.func.value, ast.Name) and node.func.value.id == owner]


def test_one_subprocess_runner():
    runners = sorted(m for m in MODULES if any(t.split(".")[0] == "subprocess" for t, _ in IMPORTS[m]))
    assert runners == ["driver_loader.system.runner"], "run programs through driver_loader.system.runner"


def test_one_atomic_writer():
    renaming = sorted(m for m in MODULES if _calls(m, "os", ("replace", "rename")))
    assert renaming == ["driver_loader.system.atomic"], "replace files through driver_loader.system.atomic"
