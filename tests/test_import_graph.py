"""The house's layers, checked from the import graph: every import (lazy ones inside functions too)
goes to the same or a lower layer, and no modules import each other in a cycle."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "spatialssl"
LAYERS = [  # lowest first; a module may import from its own layer and those before it
    ("foundation", ["errors", "files", "options"]),
    ("blocks", ["augment", "canvas", "regularize", "losses", "metrics", "ema", "lars"]),
    ("parts", ["samplers", "models", "data", "detection"]),
    ("compositions", ["methods", "evaluate"]),
    ("engine", ["engine"]),
    ("commands", ["commands"]),
    ("studies", ["studies"]),
    ("entry points", ["cli", "__main__", ""]),
]


def module_names() -> dict:
    """Dotted name -> file, for every module of the package."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict) -> set:
    """The package's modules that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # "from pkg import module" imports the module itself
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {target for target in found if target in modules and target != name}


def layer_of(name: str) -> int:
    inner = name.split(".", 1)[1] if "." in name else ""
    top = inner.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS and to ARCHITECTURE.md")


@pytest.fixture(scope="module")
def graph() -> dict:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_every_import_goes_to_the_same_or_a_lower_layer(graph):
    upward = [f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for name, targets in graph.items() for target in targets if layer_of(target) > layer_of(name)]
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other_in_a_cycle(graph):
    state, cycles = {}, []

    def visit(name, trail):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_the_graph_sees_the_imports_it_checks(graph):
    """The checks above would pass on an empty graph: make sure relative, lazy and aliased imports are read."""
    assert "spatialssl.engine.checkpoint" in graph["spatialssl.engine.train"]  # from . import checkpoint
    assert "spatialssl.engine.config" in graph["spatialssl.cli"]  # a lazy import inside a function
    assert "spatialssl.augment" in graph["spatialssl.samplers.patches"]  # from .. import augment
    assert len(graph) > 60
