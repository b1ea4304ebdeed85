"""Imports go one way: no part of polypsynth imports a part above it, not even inside a function
(where an import cycle hides until the function runs)."""

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "polypsynth"
# Lowest first; a part may import its own layer and the ones below.
LAYERS = [
    {"errors", "atomic", "__init__"},
    {"config", "bundle_format"},
    {"data"},
    {"models"},
    {"backends"},
    {"sampling"},
    {"export", "train"},
    {"evaluate", "serve"},
    {"demo"},
    {"cli", "__main__"},
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def _part(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_parts(tree: ast.AST):
    for node in ast.walk(tree):  # every import, at module level or inside a function
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("polypsynth."):
            yield node.lineno, node.module.split(".")[1]
        elif isinstance(node, ast.ImportFrom) and node.module == "polypsynth":
            yield node.lineno, "__init__"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("polypsynth."):
                    yield node.lineno, alias.name.split(".")[1]


def test_no_part_imports_a_part_above_it():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        if "_proto" in path.parts:
            continue
        part = _part(path)
        assert part in RANK, f"{path}: part {part!r} has no layer in this test"
        for line, imported in _imported_parts(ast.parse(path.read_text())):
            assert imported in RANK, f"{path}:{line} imports unknown part {imported!r}"
            if RANK[imported] > RANK[part]:
                upward.append(f"{path.relative_to(SRC)}:{line} ({part}) imports {imported}")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)
