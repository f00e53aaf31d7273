"""What is deployed does not depend on research code: `shared/`, `probes/` and `services/` never import
`research` (the simulated clients, their attacks, the experiments), except the CLI, inside the commands
that need it (or for type checking only), so that importing the CLI loads none of it."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def research_imports(path: Path) -> list[tuple[int, bool]]:
    """(line, at module level) of every import of `research` in the file; an import under
    `if TYPE_CHECKING:` does not count as module level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            if any(n == "research" or n.startswith("research.") for n in names):
                found.append((child.lineno, top))
            typing_only = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            in_function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, top and not typing_only and not in_function)

    visit(tree, True)
    return found


def modules(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


@pytest.mark.parametrize(
    "path", modules("shared", "probes", "services"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_deployed_code_imports_no_research_code(path):
    found = research_imports(path)
    if path.is_relative_to(ROOT / "services" / "cli"):
        found = [(line, top) for line, top in found if top]  # only inside a command (or typing-only)
    assert not found, f"{path.relative_to(ROOT)} imports research at lines {[line for line, _ in found]}"


def test_the_check_sees_imports_at_every_depth(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import research.clients\n"
        "if TYPE_CHECKING:\n    from research.simulation import SimulationConfig\n"
        "def command():\n    from research import experiments\n"
        "try:\n    import research\nexcept ImportError:\n    pass\n"
        "from researchy import x\n"
    )
    assert research_imports(source) == [(2, True), (4, False), (6, False), (8, True)]
    assert modules("services") and research_imports(ROOT / "services" / "cli" / "main.py")  # the CLI does
