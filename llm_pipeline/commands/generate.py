"""`llm-pipeline generate --model <uri> --prompt "..."`: a gpt or t5 model's text, streamed to
stdout as it is generated (llm_pipeline/inference.py: what each kind of model writes)."""

from __future__ import annotations

import argparse
import sys

from llm_pipeline.commands.export import URI_HELP

HELP = "stream a gpt or t5 model's text for a prompt to stdout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=URI_HELP)
    parser.add_argument("--prompt", required=True, help="the text to continue (a fine-tuned model: its task input)")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="most tokens to generate (default 40)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; > 0 samples")
    parser.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens only")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="a column the model's prompt template names besides the input, e.g. --field lang=de (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from llm_pipeline import inference
    from llm_pipeline.errors import PipelineError
    from llm_pipeline.tracking import registry

    row = {inference.TEXT_COLUMN: args.prompt, **dict(_field(item) for item in args.field)}
    options = inference.build_options(
        {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k, "seed": args.seed}
    )
    with registry.model_folder(args.model) as folder:
        loaded = inference.load_model_folder(folder)
    if loaded.use not in inference.WRITERS:
        raise PipelineError(f"{args.model}: generate needs a gpt or t5 model, and this is {loaded.what}")

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    inference.complete(loaded, row, options, on_text=write)
    sys.stdout.write("\n")
    return 0


def _field(item: str) -> tuple[str, str]:
    from llm_pipeline.errors import PipelineError

    column, sep, value = item.partition("=")
    if not sep or not column.strip():
        raise PipelineError(f"--field {item!r}: expected COLUMN=VALUE, e.g. --field lang=de")
    return column.strip(), value
