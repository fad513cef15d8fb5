"""Train and score a profile: another budget (params/profiles/<name>.yaml) on the project's data.

    .venv/bin/python bench/profile_run.py --profile params/profiles/long.yaml --out bench/results/profile-long
    make run PROFILE=long          # the same, after `dvc repro tokenize` brings ingest and tokenize up to date

The profile's params files (llm_pipeline.profiles.resolve: the project's params/*.yaml with the
profile's overrides, only its families and runs, plus <run>-scratch twins) are written to
OUT/params/, so what ran is there to read. OUT links the project's data/ingest and data/tokenize
(run ingest and tokenize first) and docs/ (the quality curve the report reads); models,
checkpoints and reports go under OUT, tracking off, and nothing in the project changes. Stages
run in the pipeline's order through the CLI; a stage whose report exists is not rerun, and a
killed stage resumes from its checkpoint, so a killed bench goes on where it stopped. At the
end: OUT/reports/summary.md (the verdicts beside the baselines) and OUT/timing.json (seconds
per stage and in all, the wall time the profile's budget is about).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from workdirs import SHARED_DATA, link, missing_data, run_stage  # bench/ is on sys.path as the script's folder

from llm_pipeline.config import load_params
from llm_pipeline.errors import PipelineError
from llm_pipeline.profiles import PROFILE_STAGES, load_profile, resolve


def write_params(project: Path, out: Path, resolved: dict[str, dict]) -> None:
    """OUT/params/: the profile's resolved files, and the project's other params files as they are."""
    params = out / "params"
    params.mkdir(parents=True, exist_ok=True)
    for path in sorted((project / "params").glob("*.yaml")):
        if path.stem not in resolved:
            shutil.copyfile(path, params / path.name)
    for stage, data in resolved.items():
        header = f"# written by bench/profile_run.py: params/{stage}.yaml with the profile's overrides\n"
        (params / f"{stage}.yaml").write_text(header + yaml.safe_dump(data, sort_keys=False))


def stages(resolved: dict[str, dict]) -> list[tuple[str, str | None]]:
    """(stage, item) in the pipeline's order: pretrain each family, fine-tune each run, score, report."""
    return [
        *(("pretrain", family) for family in resolved["pretrain"]["families"]),
        *(("finetune", run) for run in resolved["finetune"]["runs"]),
        ("evaluate", None),
        ("report", None),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="see the module docstring")
    parser.add_argument("--profile", type=Path, required=True, help="a profile file, e.g. params/profiles/long.yaml")
    parser.add_argument("--project", type=Path, default=Path("."), help="checkout with data/ingest, data/tokenize")
    parser.add_argument("--out", type=Path, help="where it trains (default bench/results/profile-<name>)")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    out = (args.out or project / "bench" / "results" / f"profile-{args.profile.stem}").resolve()
    try:
        if missing_data(project):
            raise PipelineError(
                f"{project}: run ingest and tokenize first (`dvc repro tokenize`): {missing_data(project)}"
            )
        profile = load_profile(args.profile)
        params = {stage: load_params(project / "params" / f"{stage}.yaml") for stage in PROFILE_STAGES}
        resolved = resolve(profile, params, source=str(args.profile))
    except PipelineError as exc:
        print(f"profile_run: error: {exc}", file=sys.stderr)
        return 2
    write_params(project, out, resolved)
    link(out, project, (*SHARED_DATA, "docs"))  # docs/: the quality curve the report states crossings from
    timing_path = out / "timing.json"
    timing: dict[str, float] = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    print(f"== profile {args.profile} -> {out}", flush=True)
    started = time.perf_counter()
    for stage, item in stages(resolved):
        name = f"{stage}-{item}" if item else stage
        report = out / "reports" / ("summary.md" if stage == "report" else f"{name}.json")
        if report.is_file() and name in timing:
            print(f"  {name}: done already ({report.relative_to(out)})", flush=True)
            continue
        timing[name] = round(run_stage(out, stage, *([f"item={item}"] if item else [])), 1)
        timing_path.write_text(json.dumps(timing, indent=1))  # after each stage: a killed run keeps them
    timing["total"] = round(sum(v for k, v in timing.items() if k != "total"), 1)
    timing_path.write_text(json.dumps(timing, indent=1))
    print(f"== {time.perf_counter() - started:.0f} s this time; {timing['total']:.0f} s in all stages ({timing_path})")
    subprocess.run([sys.executable, "-m", "llm_pipeline.summary", str(out / "reports" / "evaluate.json")], check=False)
    print(f"Full report: {out / 'reports' / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
