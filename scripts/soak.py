"""Soak: the default flow N times back to back on an unchanged project; what each run did.

Per run it records the wall time, which stages DVC executed (its "Running stage" lines), the
MLflow runs and model versions that appeared, and the bytes each place on disk grew by, then
writes them as JSON and prints a table. The promise checked (issue 11, item 7): after the first
run, a run re-executes nothing but `fetch` (always runs, by design), registers no model version,
and data/ and models/ do not grow (the DVC cache by fetch's report at most: it names its new
MLflow run). Exit status 1 when a later run breaks that promise.

    python scripts/soak.py --project-dir /tmp/fresh-clone --runs 3 --out soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

# Places a run can write to, relative to the project; everything else is summed as "other".
PLACES = ["data", "models", "reports", ".dvc/cache", "mlartifacts", "mlflow.db", "logs"]
RAN = re.compile(r"Running stage '([^']+)'")


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def disk(project: Path) -> dict[str, int]:
    sizes = {place: tree_bytes(project / place) if (project / place).exists() else 0 for place in PLACES}
    skip = {".git", ".venv", *PLACES}
    sizes["other"] = sum(tree_bytes(p) for p in project.iterdir() if p.name not in skip)
    return sizes


def tracking_counts(project: Path) -> dict[str, int]:
    """Runs and model versions in the project's own store (the default sqlite mlflow.db)."""
    from mlflow import MlflowClient

    if not (project / "mlflow.db").exists():  # before the first run: no store yet (and do not create one)
        return {"runs": 0, "model_versions": 0}
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    versions = sum(len(client.search_model_versions(f"name='{m.name}'")) for m in client.search_registered_models())
    runs = sum(len(client.search_runs([e.experiment_id], max_results=10_000)) for e in client.search_experiments())
    return {"runs": runs, "model_versions": versions}


def one_run(project: Path, log: Path) -> dict:
    before_disk, before_tracking = disk(project), tracking_counts(project)
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(["make", "run"], cwd=project, stdout=out, stderr=subprocess.STDOUT)
    wall = time.monotonic() - start
    after_disk, after_tracking = disk(project), tracking_counts(project)
    status = subprocess.run(["dvc", "status"], cwd=project, capture_output=True, text=True, env=venv_env(project))
    return {
        "exit": proc.returncode,
        "wall_s": round(wall, 1),
        "stages_run": RAN.findall(log.read_text(errors="replace")),
        "new_runs": after_tracking["runs"] - before_tracking["runs"],
        "new_model_versions": after_tracking["model_versions"] - before_tracking["model_versions"],
        "disk_growth_bytes": {k: after_disk[k] - before_disk[k] for k in after_disk},
        "dvc_status": status.stdout.strip(),
        "fetch_report_bytes": tree_bytes(project / "reports" / "fetch.json"),
        "log": str(log),
    }


def venv_env(project: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{project / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def broken_promises(index: int, run: dict) -> list[str]:
    if run["exit"] != 0:
        return [f"run {index}: `make run` exited {run['exit']} (see {run['log']})"]
    if index == 1:
        return []
    problems = []
    if run["stages_run"] != ["fetch"]:
        problems.append(f"run {index} re-executed {run['stages_run']} (only fetch should run)")
    if run["new_model_versions"]:
        problems.append(f"run {index} registered {run['new_model_versions']} model version(s)")
    grew = [k for k in ("data", "models") if run["disk_growth_bytes"][k]]
    # fetch always runs and its report (a DVC-cached metrics file) names its new MLflow run: the
    # one object a run that changes nothing may add to the cache
    if run["disk_growth_bytes"][".dvc/cache"] > run["fetch_report_bytes"]:
        grew.append(".dvc/cache (more than fetch's report)")
    if grew:
        problems.append(f"run {index}: {', '.join(grew)} grew")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project-dir", type=Path, required=True, help="a clean clone (make run installs its venv)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("soak.json"), help="where the figures go (JSON)")
    args = parser.parse_args()
    project = args.project_dir.resolve()
    # install first, so run 1's time is the pipeline's, not pip's
    subprocess.run(["make", "install"], cwd=project, check=True, stdout=subprocess.DEVNULL)
    runs, problems = [], []
    for index in range(1, args.runs + 1):
        print(f"soak: run {index}/{args.runs} ...", flush=True)
        run = one_run(project, args.out.resolve().with_name(f"{args.out.stem}-run{index}.log"))
        runs.append(run)
        problems += broken_promises(index, run)
        args.out.write_text(json.dumps({"project": str(project), "runs": runs, "problems": problems}, indent=2))
        g = run["disk_growth_bytes"]
        print(
            f"  exit {run['exit']} | {run['wall_s']:.0f} s | stages {run['stages_run']} | +{run['new_runs']} runs "
            f"| +{run['new_model_versions']} versions | grew: "
            + ", ".join(f"{k} {v / 1e6:+.2f} MB" for k, v in g.items() if v),
            flush=True,
        )
        if run["exit"] != 0:
            break
    for problem in problems:
        print(f"soak: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
