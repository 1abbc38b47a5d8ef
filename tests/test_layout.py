"""The house rules of the package, read from its source with ``ast``.

- library modules never import a command module or the ``cli`` package;
- no import cycle between modules, counting imports inside functions;
- no function takes more than ``MAX_PARAMETERS`` parameters;
- the layout table of docs/DEVELOPMENT.md names every room of the package, and only those;
- every command the README and the hand-written docs pages give uses only flags the command accepts.
"""
import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clrsearch"
MAX_PARAMETERS = 7
COMMANDS = {"clrsearch.coarse", "clrsearch.fine", "clrsearch.evaluate", "clrsearch.train", "clrsearch.lrrange",
            "clrsearch.gradcheck", "clrsearch.data.__main__", "clrsearch.report.__main__"}
LAYOUT_PAGE = ROOT / "docs" / "DEVELOPMENT.md"
# The pages written by hand; docs/PERFORMANCE.md, RELIABILITY.md and RESULTS.md are written by the tools.
GUIDES = [ROOT / "README.md"] + [ROOT / "docs" / name for name in
                                 ("COMPARING.md", "SCALING.md", "TRACKING.md", "DEVELOPMENT.md")]


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


ENVIRONMENT_READ = re.compile(r"\bos\s*\.\s*(environb?|getenvb?|putenv|unsetenv)\b|\bimport\s+(environ|getenv)\b"
                              r"|\bfrom\s+os\s+import\b[^\n]*\b(environ|getenv)\b")


def environment_reads(path):
    """``line: text`` of every line of the file that reads or sets the process's environment."""
    return [f"{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
            if ENVIRONMENT_READ.search(line)]


LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts)


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_command_line_reads_the_environment(path):
    assert environment_reads(path) == []


def test_environment_reads_are_found(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\nx = os.environ.get('A')\ny = os.getenv('B')\nfrom os import environ\n"
                    "environ = {}  # a parameter of that name is no read\nz = dict(os.environ)\n")
    assert [line.split(":")[0] for line in environment_reads(path)] == ["2", "3", "4", "6"]


def test_layout_table_matches_the_tree():
    table = LAYOUT_PAGE.read_text().split("## Layout", 1)[1]
    named = set(re.findall(r"`(clrsearch/[\w/]*\w(?:\.py)?/?|tools/)`", table))
    rooms = {f"clrsearch/{p.name}/" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    rooms |= {f"clrsearch/{p.name}" for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    rooms.add("tools/")
    assert named == rooms


PACKAGE_COMMANDS = {"clrsearch.data": "clrsearch.cli.data", "clrsearch.report": "clrsearch.cli.report"}  # __main__
PROGRAMS = sorted(COMMANDS - {f"{name}.__main__" for name in PACKAGE_COMMANDS} | set(PACKAGE_COMMANDS)) + [
    f"tools/{path.stem}" for path in sorted((ROOT / "tools").glob("*.py"))]


def command_lines(markdown):
    """The shell lines of ``markdown``'s fenced blocks (continuations joined) and its inline code spans."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", markdown, flags=re.S | re.M)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    return lines + re.findall(r"`([^`\n]+)`", prose)


def invocations(line):
    """``(program, flags)`` of each ``python -m clrsearch.X`` or ``python tools/X.py`` in a shell line, and
    ``(None, [flag])`` for a line that is a flag alone (``--alpha``, ``--final-seeds 1``)."""
    if line.startswith("--"):
        return [(None, [line.split()[0].split("=")[0]])]
    found = []
    for part in re.split(r"&&|\|\||;|\|", re.split(r"\s#\s", line)[0]):
        match = re.search(r"python (?:-m (clrsearch(?:\.\w+)*)|(tools/\w+)\.py)(.*)", part)
        if match:
            module, tool, rest = match.groups()
            words = shlex.split(rest.replace("[", " ").replace("]", " "), posix=True)
            found.append((module or tool, sorted({w.split("=")[0] for w in words if w.startswith("--")})))
    return found


_HELP = {}


def accepted_flags(program, capsys):
    """The flags ``program --help`` lists: a command of the package, or a tool of ``tools/``."""
    if program not in _HELP:
        name = PACKAGE_COMMANDS.get(program, program)
        module = importlib.import_module(name.removeprefix("tools/"))
        with pytest.raises(SystemExit) as done:
            module.main(["--help"])
        assert done.value.code == 0
        _HELP[program] = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", capsys.readouterr().out))
    return _HELP[program]


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_commands_of_the_guides_use_only_flags_their_command_accepts(page, capsys):
    """A command's flags must be its own; a flag written alone must be one of some command or tool."""
    used = {}
    for line in command_lines(page.read_text()):
        for program, flags in invocations(line):
            used.setdefault(program, set()).update(flags)
    assert set(used) - {None}, f"no command in {page.name}"
    assert set(used) - {None} <= set(PROGRAMS)
    anyone = set().union(*(accepted_flags(program, capsys) for program in PROGRAMS))
    unknown = {program: sorted(flags - (anyone if program is None else accepted_flags(program, capsys)))
               for program, flags in used.items()}
    assert {program: flags for program, flags in unknown.items() if flags} == {}


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


def test_commands_are_found_in_blocks_chains_and_prose_and_comments_are_not():
    page = ("Run `python -m clrsearch.fine --grid 0,1` or:\n\n```bash\n"
            "pip install -e . && python -m clrsearch.coarse --n-trials 3   # not --this\n"
            "taskset -c 0 python tools/bench.py \\\n    --skip-study [--json]\n```\n")
    page += "With `--alpha 0.1` or `--no-race`, or `-m 'not slow'`.\n"
    found = [invocation for line in command_lines(page) for invocation in invocations(line)]
    assert sorted(found, key=str) == [("clrsearch.coarse", ["--n-trials"]), ("clrsearch.fine", ["--grid"]),
                                      ("tools/bench", ["--json", "--skip-study"]),
                                      (None, ["--alpha"]), (None, ["--no-race"])]


def test_eight_parameters_are_too_many(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def ok(a, b, c, d, e, f, g):\n    pass\n\n"
                    "def long(a, b, c, d, e, f, g, *, h=1):\n    pass\n\n"
                    "class K:\n    def method(self, a, b, c, d, e, f, g):\n        pass\n")
    assert too_many_parameters(path) == ["long (8)"]
