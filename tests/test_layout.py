"""The house rules of the package, read from its source with ``ast``.

- library modules never import a command module or the ``cli`` package;
- no import cycle between modules, counting imports inside functions;
- no function takes more than ``MAX_PARAMETERS`` parameters;
- the README's layout table names every room of the package, and only those.
"""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clrsearch"
MAX_PARAMETERS = 7
COMMANDS = {"clrsearch.coarse", "clrsearch.fine", "clrsearch.evaluate", "clrsearch.train", "clrsearch.lrrange",
            "clrsearch.gradcheck", "clrsearch.data.__main__"}


def module_name(path, root=ROOT):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(package=PACKAGE):
    """Module name -> path of every module under ``package``."""
    return {module_name(path, package.parent): path for path in sorted(package.rglob("*.py"))}


def imported_modules(path, name, known):
    """The modules of ``known`` that module ``name`` (its source at ``path``) imports, anywhere in it.

    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``.
    """
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            targets = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in known else prefix
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # import a.b.c of a module a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(package=PACKAGE):
    modules = package_modules(package)
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def is_cli(name):
    return name in COMMANDS or name == "clrsearch.cli" or name.startswith("clrsearch.cli.")


def cycles(graph):
    """Every strongly connected set of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def too_many_parameters(path, limit=MAX_PARAMETERS):
    """``name (count)`` of every function in the file with more than ``limit`` parameters (self and cls excluded)."""
    long = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
            count = len([n for n in names if n not in ("self", "cls")])
            if count > limit:
                long.append(f"{getattr(node, 'name', 'lambda')} ({count})")
    return long


# ----------------------------------------------------------------------------- the checks, on the package


def test_library_modules_do_not_import_the_command_line():
    offenders = {name: sorted(filter(is_cli, targets)) for name, targets in import_graph().items()
                 if not is_cli(name) and any(map(is_cli, targets))}
    assert offenders == {}


def test_no_import_cycles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_take_at_most_seven_parameters(path):
    assert too_many_parameters(path) == []


def test_readme_layout_table_matches_the_tree():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Layout", 1)[1]
    named = set(re.findall(r"`(clrsearch/[\w/]*\w(?:\.py)?/?|tools/)`", table))
    rooms = {f"clrsearch/{p.name}/" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    rooms |= {f"clrsearch/{p.name}" for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    rooms.add("tools/")
    assert named == rooms


# ----------------------------------------------------------------------------- the checks themselves, on worked examples


def write_package(root, files):
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_cycle_behind_a_function_level_import_is_found(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\n",
        "pkg/b.py": "def f():\n    from .a import g\n",
        "pkg/c.py": "from .b import f\n",
    })
    assert cycles(import_graph(package)) == [["pkg.a", "pkg.b"]]


def test_from_package_import_module_counts_as_the_module(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "from .x import y\n",
        "pkg/sub/x.py": "from .. import top\ny = 1\n",
        "pkg/top.py": "import numpy\n",
    })
    graph = import_graph(package)
    assert graph["pkg.sub"] == {"pkg.sub.x"}
    assert graph["pkg.sub.x"] == {"pkg.top"}
    assert cycles(graph) == []


def test_eight_parameters_are_too_many(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def ok(a, b, c, d, e, f, g):\n    pass\n\n"
                    "def long(a, b, c, d, e, f, g, *, h=1):\n    pass\n\n"
                    "class K:\n    def method(self, a, b, c, d, e, f, g):\n        pass\n")
    assert too_many_parameters(path) == ["long (8)"]
