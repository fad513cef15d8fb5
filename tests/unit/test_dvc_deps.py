"""dvc.yaml's deps cannot go stale: every file a stage's code imports is covered by a dep of that stage.

Walks the imports of `llm_pipeline.cli` plus the stage's module, transitively, inside the
package (every `import`, at module level or inside a function, and the `__init__` of every
package on the way), and checks each file lies at or under one of the stage's deps.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "llm_pipeline"


def module_file(name: str) -> Path | None:
    """The source file of a module of our package (None outside it or if it does not exist)."""
    if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, name: str) -> set[str]:
    """Modules an `import` in `path` (module `name`) can execute, with every parent package."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                parts = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import submodule`
    with_parents = set()
    for module in found:
        parts = module.split(".")
        with_parents |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return with_parents


def code_files(*roots: str) -> set[Path]:
    files: set[Path] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or path in files:
            continue
        files.add(path)
        todo += sorted(imported_modules(path, name))
    return files


def stages() -> dict[str, tuple[str, list[str]]]:
    """dvc.yaml stage name -> (its llm_pipeline stage, its deps); foreach stages by their `do`."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    out = {}
    for name, stage in spec["stages"].items():
        body = stage.get("do", stage)
        cmd = body["cmd"].split()
        assert cmd[:1] == ["llm-pipeline"], f"{name}: expected an llm-pipeline command, got {body['cmd']!r}"
        out[name] = (cmd[1], body["deps"])
    return out


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == dep.rstrip("/") or rel.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("dvc_stage", sorted(stages()))
def test_every_imported_file_is_a_dep_of_its_stage(dvc_stage):
    stage, deps = stages()[dvc_stage]
    assert f"llm_pipeline/stages/{stage}.py" in deps or any(
        covered(ROOT / f"llm_pipeline/stages/{stage}.py", [d]) for d in deps
    )
    files = code_files(f"{PACKAGE}.cli", f"{PACKAGE}.stages.{stage}")
    assert ROOT / "llm_pipeline" / "families.py" in files or stage in ("fetch", "ingest", "tokenize", "report")
    missing = sorted(p.relative_to(ROOT).as_posix() for p in files if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {dvc_stage!r} does not depend on code it imports: {missing}"


@pytest.mark.parametrize("dvc_stage", sorted(stages()))
def test_no_stage_depends_on_code_it_does_not_import(dvc_stage):
    """The other direction: a code dep the stage never imports would rerun it for nothing."""
    stage, deps = stages()[dvc_stage]
    files = code_files(f"{PACKAGE}.cli", f"{PACKAGE}.stages.{stage}")
    code_deps = [d for d in deps if d.startswith(f"{PACKAGE}/")]
    unused = [d for d in code_deps if not any(covered(f, [d]) for f in files)]
    assert not unused, f"dvc.yaml stage {dvc_stage!r} depends on code it does not import: {unused}"


def test_the_walk_follows_function_level_and_package_imports():
    """The walk itself: a lazy import inside a function and a package's __init__ are found."""
    files = {p.relative_to(ROOT).as_posix() for p in code_files(f"{PACKAGE}.stages.ingest")}
    assert "llm_pipeline/data/sources/hf_datasets.py" in files  # imported inside a function, only when used
    assert "llm_pipeline/data/__init__.py" in files and "llm_pipeline/__init__.py" in files


def test_path_params_are_the_deps_not_a_copy():
    """finetune / evaluate read their inputs from params; dvc.yaml must use those params, not hard-coded paths."""
    text = (ROOT / "dvc.yaml").read_text()
    spec = yaml.safe_load(text)["stages"]
    finetune_deps = spec["finetune"]["do"]["deps"]
    # a run reads its task's folder and its family's pretrain folder (model + tokenizer)
    assert "${tasks_dir}/${item.task}" in finetune_deps and "${pretrain_root}/${item.family}" in finetune_deps
    assert spec["finetune"]["do"]["vars"] == ["params/finetune.yaml:tasks_dir,pretrain_root,output_dir,plots_dir"]
    evaluate_deps = spec["evaluate"]["deps"]
    assert {"${tasks_dir}", "${tokenize_root}", "${pretrain_root}", "${finetune_root}"} <= set(evaluate_deps)
