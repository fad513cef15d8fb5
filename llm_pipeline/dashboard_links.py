"""Deep links into the MLflow dashboard: the experiment's Training runs page and the models.

MLflow 3 opens an experiment on its GenAI overview in a fresh browser (the toggle lives in the
browser's localStorage and ignores the experiment's tag, mlflow#24498); a link to
`#/experiments/<id>/runs` opens the runs table directly. `make ui` and `make run` print these.

    python -m llm_pipeline.dashboard_links --base http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llm_pipeline.errors import PipelineError
from llm_pipeline.tracking.client import experiment_name, mlflow_client, tracking_uri


def dashboard_links(base_url: str, experiment_id: str | None) -> list[tuple[str, str]]:
    """(what, URL) pairs for a dashboard at `base_url`; without an experiment only the models page."""
    base = base_url.rstrip("/")
    runs = [("Training runs", f"{base}/#/experiments/{experiment_id}/runs")] if experiment_id else []
    return [*runs, ("Registered models", f"{base}/#/models")]


def find_experiment_id() -> str | None:
    """The project's experiment in the tracking store, or None before the first tracked run
    (looked up, never created: printing a link must not write to the store)."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None  # opening a sqlite store creates the file
    experiment = mlflow_client().get_experiment_by_name(experiment_name())
    return experiment.experiment_id if experiment is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:5000", help="the dashboard's address")
    args = parser.parse_args(argv)
    try:
        experiment_id = find_experiment_id()
    except PipelineError as exc:
        print(f"links: error: {exc}", file=sys.stderr)
        return 2
    if experiment_id is None:
        print(f"No experiment {experiment_name()!r} in {tracking_uri()} yet: `make run` first.")
    for what, url in dashboard_links(args.base, experiment_id):
        print(f"{what + ':':19} {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
