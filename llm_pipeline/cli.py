"""`llm-pipeline <stage> --params params/<stage>.yaml [--set a.b=v ...]`, and the tool commands
of llm_pipeline.commands (`llm-pipeline <tool> ...`).

Errors in the input (bad params, missing files, mismatched stage outputs) print one line
naming the file or key and exit 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from llm_pipeline.config import load_config
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import is_no_space, no_space_error, no_space_path
from llm_pipeline.stages.base import PER_ITEM_STAGES, STAGES

STAGE_HELP = {
    "fetch": "refresh the upstream sources; write the content-addressed snapshot ingest reads",
    "ingest": "fetch/read sources, clean, dedup, split; build task datasets",
    "tokenize": "train the tokenizer on train split; encode corpus into token shards",
    "pretrain": "pretrain one model family (a key of `families` in the params) with Lightning; register it",
    "finetune": "fine-tune a pretrained model (any family) on a downstream task; register it",
    "evaluate": "every model beside its baselines (TF-IDF, copy, lead-k, bigram...), source_gain, pretraining_gain",
    "report": "reports/summary.md and PNG figures from the evaluation and the loss curves",
}

# Tool commands (not stages): name -> module under llm_pipeline.commands, each with HELP (one
# line), add_arguments(parser) and run(args) -> int. Imported only when the parser is built,
# so no stage (and no DVC dep list) depends on them.
TOOLS: dict[str, str] = {"export": "export", "generate": "generate", "lineage": "lineage"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-pipeline",
        description="Run one stage of the pipeline: fetch -> ingest -> tokenize -> pretrain -> finetune -> evaluate.",
        epilog="Example: llm-pipeline pretrain gpt --set families.gpt.trainer.max_steps=500 --dry-run",
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in STAGES:
        p = sub.add_parser(stage, help=STAGE_HELP[stage], description=STAGE_HELP[stage])
        p.add_argument("--params", default=f"params/{stage}.yaml", help=f"params YAML (default: params/{stage}.yaml)")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a param by dotted key, value parsed as YAML (repeatable)",
        )
        if stage in PER_ITEM_STAGES:
            p.add_argument(
                "item",
                nargs="?",
                help=f"the key of {PER_ITEM_STAGES[stage]} to build (same as --set item=ITEM)",
            )
        p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
        p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    for tool, module_name in TOOLS.items():
        module = importlib.import_module(f"llm_pipeline.commands.{module_name}")
        p = sub.add_parser(tool, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def run_tool(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"llm_pipeline.commands.{TOOLS[args.stage]}")
    try:
        return int(module.run(args))
    except PipelineError as exc:
        if args.debug:
            raise
        print(f"llm-pipeline {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug or not is_no_space(exc):
            raise
        print(f"llm-pipeline {args.stage}: error: {no_space_line(exc)}", file=sys.stderr)
        return 2


def no_space_line(exc: BaseException) -> str:
    """A full disk that no write site turned into a PipelineError: the path if the error kept it."""
    path = no_space_path(exc)
    if path is None:
        return f"no space left on device ({exc}; the writer did not name the file: rerun with --debug)"
    return str(no_space_error(path, exc))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.stage in TOOLS:
        return run_tool(args)
    try:
        from llm_pipeline.stages.base import config_class, execute

        item = [f"item={args.item}"] if getattr(args, "item", None) else []
        cfg = load_config(config_class(args.stage), args.params, item + args.overrides)
        if args.dry_run:
            print(json.dumps(cfg.model_dump(mode="json"), indent=2))
            return 0
        result = execute(args.stage, cfg)
    except PipelineError as exc:
        if args.debug:
            raise
        print(f"llm-pipeline {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a full disk (or quota) is one line too
        if args.debug or not is_no_space(exc):
            raise
        print(f"llm-pipeline {args.stage}: error: {no_space_line(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(result.metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
