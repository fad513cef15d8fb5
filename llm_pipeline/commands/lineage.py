"""`llm-pipeline lineage models:/<name>@<alias>` (or `/<version>`): where a model version came
from, stage run by stage run back to the raw source files' sha256 (llm_pipeline/lineage.py)."""

from __future__ import annotations

import argparse
import os

HELP = "print a model version's chain: finetune -> pretrain -> tokenize -> ingest -> source files (sha256)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_uri", help="models:/<name>@<alias> (e.g. @champion) or models:/<name>/<version>")


def run(args: argparse.Namespace) -> int:
    from llm_pipeline import lineage

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per manifest read: noise
    print(lineage.render(lineage.trace_model(args.model_uri)))
    return 0
