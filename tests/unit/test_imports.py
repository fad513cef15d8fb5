"""No import cycle inside llm_pipeline: the modules form a graph that points one way.

Every import a module can execute counts, at module level or inside a function (a lazy import
hides a loop, it does not remove it); imports under `if TYPE_CHECKING:` run only for the type
checker and do not. A module's own parent packages are not edges (importing `a.b` runs `a`).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "llm_pipeline"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def executed_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import nodes outside `if TYPE_CHECKING:` blocks."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and is_type_checking(node):
            found += [n for child in node.orelse for n in executed_imports(ast.Module(body=[child], type_ignores=[]))]
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        found += executed_imports(node)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in executed_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            else:
                base = node.module or ""
                if node.level:
                    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}".rstrip(".")
                targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        # the module each name resolves to (`from pkg import submodule` or `from module import name`)
        resolved = {t if t in modules else t.rpartition(".")[0] for t in targets}
        graph[name] = {t for t in resolved if t in modules and t != name and not name.startswith(f"{t}.")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_inside_the_package():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_sees_a_loop_through_a_function_level_import_and_not_through_type_checking():
    a = ast.parse("def f():\n    from llm_pipeline.b import x\n")
    typed = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from llm_pipeline.a import y\n")
    assert [type(n).__name__ for n in executed_imports(a)] == ["ImportFrom"]
    assert [n.module for n in executed_imports(typed) if isinstance(n, ast.ImportFrom)] == ["typing"]
    assert len(executed_imports(typed)) == 1
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_no_arrow_points_back_up():
    """evaluation imports no stage (a stage runs evaluation, not the other way); serving
    (inference, the pyfunc) runs without the evaluation package; the family registry, which every
    stage imports, does not import the transformers twins (tests, bench and export do)."""
    graph = import_graph()
    for name in graph:
        if name.startswith("llm_pipeline.evaluation"):
            assert not {t for t in graph[name] if t.startswith("llm_pipeline.stages")}, name
    for serving in ("llm_pipeline.inference", "llm_pipeline.mlflow_pyfunc"):
        assert not {m for m in reachable(graph, serving) if m.startswith("llm_pipeline.evaluation")}, serving
    assert "llm_pipeline.models.hf_convert" not in reachable(graph, "llm_pipeline.families")


def test_no_stage_imports_another_stage():
    """Stages share code through the packages below them (and stages/base.py, the runner), so
    changing one stage's module never reruns another stage under DVC."""
    graph = import_graph()
    shared = {"llm_pipeline.stages", "llm_pipeline.stages.base"}
    for name in graph:
        if name.startswith("llm_pipeline.stages.") and name not in shared:
            others = {t for t in graph[name] if t.startswith("llm_pipeline.stages.") and t not in shared}
            assert not others, f"{name} imports the stage(s) {sorted(others)}"
