"""
The imports run one way (docs/DESIGN.md, "Layout"): each package imports only
from the packages below it, no module imports itself back through others,
and no import of ours hides inside a function to dodge a cycle.

    tokenserver  →  clients  →  realms  →  secret_store  →  tokens
    (bottom)                                                  (top)

`tokenserver.urls` (and the WSGI/ASGI entry points that load it) is the
composition root: it wires every app's views into one URLconf, so it sits
above everything. Tests are not part of the picture.
"""

import ast
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]

#: Lowest first.
LAYERS = ["tokenserver", "clients", "realms", "secret_store", "tokens"]

#: Modules that wire every layer together.
COMPOSITION_ROOT = {"tokenserver.urls", "tokenserver.wsgi", "tokenserver.asgi"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(BASE_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _our_modules() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in (BASE_DIR / package).rglob("*.py"):
            relative = path.relative_to(BASE_DIR).parts
            if "tests" in relative or "migrations" in relative:
                continue
            modules[_module_name(path)] = path
    return modules


MODULES = _our_modules()


def _resolve(name: str) -> str | None:
    """The module of ours that an imported name lives in (a.b.C → a.b), if any."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(path: Path):
    """(imported module of ours, line, inside a function?) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
            else:
                visit(child, nested)
                continue
            targets = {_resolve(name) for name in names} - {None}
            # `from tokens import cache` names the module tokens.cache, not the package.
            specific = {t for t in targets if not any(o.startswith(t + ".") for o in targets)}
            found.extend((target, child.lineno, in_function) for target in specific)

    visit(tree, False)
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    if module in COMPOSITION_ROOT:
        return len(LAYERS)
    return LAYERS.index(module.split(".")[0])


def test_the_picture_covers_every_package():
    assert {name.split(".")[0] for name in MODULES} == set(LAYERS)
    assert len(MODULES) > 40  # the walk found the code, not an empty tree


def test_each_layer_imports_only_from_the_layers_below():
    upward = [
        f"{module}:{line} imports {target}"
        for module, imports in GRAPH.items()
        for target, line, _ in imports
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_no_import_of_ours_hides_inside_a_function():
    # AppConfig.ready() is Django's place for importing signal handlers and checks.
    hidden = [
        f"{module}:{line} imports {target}"
        for module, imports in GRAPH.items()
        for target, line, in_function in imports
        if in_function and not module.endswith(".apps")
    ]
    assert hidden == []


def test_no_module_imports_itself_back():
    # Depth-first search for a cycle in the module graph (inside packages too).
    edges = {
        module: {target for target, _, _ in imports} - {module} for module, imports in GRAPH.items()
    }
    state: dict[str, str] = {}
    cycles = []

    def walk(module, trail):
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycles.append(" → ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                walk(target, [*trail, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            walk(module, [module])
    assert cycles == []


@pytest.mark.parametrize(
    "source",
    [
        "from tokens.models import FetchLog",
        "import tokens.services",
        "from tokens import cache",
    ],
)
def test_the_check_sees_an_upward_import(tmp_path, source):
    # The checks above are only as good as the import walk: it must see these.
    path = tmp_path / "probe.py"
    path.write_text(f"{source}\n\ndef f():\n    {source}\n")

    found = _imports(path)

    assert [(target.split(".")[0], in_function) for target, _, in_function in found] == [
        ("tokens", False),
        ("tokens", True),
    ]
