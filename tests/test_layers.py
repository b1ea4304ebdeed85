"""Imports go one way, in the order ARCHITECTURE.md gives, checked on every import of src/,
at module level or inside a function (where a cycle hides until the function runs):

    errors, atomic, config -> data -> models -> train -> bundle format -> backends -> sampling
        -> export -> serve, evaluate -> cli, demo

A part imports its own modules and the parts before it; parts that share a layer do not import
each other (the exceptions: the `demo` command of cli runs demo, and `python -m polypsynth` runs cli). Modules form no cycle, within
a part too. Outside cli (which keeps `--help` fast), a polypsynth import inside a function is
allowed only where the imported module needs an optional dependency, and says which."""

import ast
import re
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "polypsynth"
LAYERS = [
    {"__init__", "errors"},  # ARCHITECTURE.md's first group, errors (which the others use) first
    {"atomic", "config"},
    {"data"},
    {"models"},
    {"train"},
    {"bundle_format"},
    {"backends"},
    {"sampling"},
    {"export"},
    {"serve", "evaluate"},
    {"cli", "demo", "__main__"},
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}
SIBLINGS_ALLOWED = {("cli", "demo"), ("__main__", "cli")}  # `polypsynth demo` runs demo.run_demo
OPTIONAL = re.compile(r"#.*optional dependency: \S")


def _module(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = ("polypsynth", *rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def _sources() -> dict[str, Path]:
    return {_module(p): p for p in sorted(SRC.rglob("*.py")) if "_proto" not in p.parts}


def _imports(path: Path, modules: set[str]):
    """(line, imported module, inside a function) for every polypsynth import of `path`."""
    tree = ast.parse(path.read_text())
    in_function = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            in_function |= {id(n) for n in ast.walk(fn)}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "polypsynth":
            # `from polypsynth.x import y` imports polypsynth.x.y when that is a module
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                for a in node.names
            ]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "polypsynth"]
        for name in names:
            yield node.lineno, name, id(node) in in_function


def test_imports_follow_the_architecture():
    sources = _sources()
    wrong = []
    for module, path in sources.items():
        part = _part(module)
        assert part in RANK, f"{path}: part {part!r} has no layer in ARCHITECTURE.md's order"
        for line, imported, _ in _imports(path, set(sources)):
            other = _part(imported)
            assert other in RANK, f"{path}:{line} imports unknown part {other!r}"
            if RANK[other] > RANK[part]:
                wrong.append(f"{path.relative_to(SRC)}:{line} ({part}) imports {imported}, a later part")
            elif RANK[other] == RANK[part] and other != part and (part, other) not in SIBLINGS_ALLOWED:
                wrong.append(f"{path.relative_to(SRC)}:{line} ({part}) imports {imported}, of its own layer")
    assert not wrong, "imports against ARCHITECTURE.md:\n" + "\n".join(wrong)


def test_no_import_cycles():
    sources = _sources()
    graph = {
        m: {i for _, i, _ in _imports(p, set(sources)) if i in sources and i != m} for m, p in sources.items()
    }
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(" -> ".join([*stack[stack.index(n) :], n]))
            elif n not in state:
                visit(n, [*stack, n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_function_level_imports_only_for_optional_dependencies():
    sources = _sources()
    hidden = []
    for module, path in sources.items():
        if _part(module) in ("cli", "__main__"):
            continue
        lines = path.read_text().splitlines()
        for line, imported, inside in _imports(path, set(sources)):
            if inside and not OPTIONAL.search(lines[line - 1]):
                hidden.append(f"{path.relative_to(SRC)}:{line} imports {imported} inside a function")
    assert not hidden, (
        "import at module level, or say on the line which optional dependency the imported module "
        "needs ('# optional dependency: tensorrt'):\n" + "\n".join(hidden)
    )
