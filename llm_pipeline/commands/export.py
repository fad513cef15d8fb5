"""`llm-pipeline export <model-uri> <dir>`: a registered (or local) model in the Hugging Face
format, for `transformers`' from_pretrained (llm_pipeline/export.py says which class per family)."""

from __future__ import annotations

import argparse

HELP = "write a model in the Hugging Face format (config.json, model.safetensors, tokenizer files) into a folder"
URI_HELP = "models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/model, or a model folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_uri", help=URI_HELP)
    parser.add_argument("out_dir", help="folder to write (created; files of the same name are replaced)")


def run(args: argparse.Namespace) -> int:
    from llm_pipeline.export import export_hf
    from llm_pipeline.tracking import registry

    with registry.model_folder(args.model_uri) as folder:
        files = export_hf(folder, args.out_dir)
    print(f"{args.out_dir}: {', '.join(p.name for p in files)}")
    return 0
