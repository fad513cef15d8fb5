"""Decoding speed: our `generate` (KV cache, greedy and beam) against `transformers`' `generate` on the same weights.

    .venv/bin/python bench/decode.py --gpt data/pretrain/gpt --t5 data/finetune/translation-t5 \\
        --texts data/ingest/tasks/translation/test.parquet
    .venv/bin/python bench/decode.py --smoke      # tiny random models, seconds: checks the bench itself

Each model folder is exported with `llm-pipeline export` (llm_pipeline.export.export_hf) into a
temporary folder and loaded back with AutoModelForCausalLM / AutoModelForSeq2SeqLM.from_pretrained,
as a user of the export would; ours is the folder loaded as the pipeline loads it. Both decode the
same prompts (GPT: the first --prompt-tokens tokens of each text, left-padded; T5: each text
through the fine-tune's own input template and cut) for exactly --new-tokens tokens (ours with no
stop token, theirs with min_new_tokens = max_new_tokens), greedy and beam 4, batch 1 and 16.

Per cell: tokens/s (batch x new tokens / seconds), time to first token (a 1-token generate:
the prompt's forward and one step), the median of --reps alternating repetitions after a
warm-up, and for greedy how many rows came out token for token identical. One line per cell
`ratio <model> <mode> b<batch> <ours / theirs tokens/s>` (> 1: ours is faster). --out writes
the table as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from llm_pipeline.inference import TEXT_COLUMN, LoadedModel, load_model_folder, seq2seq_sources
from llm_pipeline.models.decoding import generate

MODES = {"greedy": 1, "beam4": 4}


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts (B, T) left-padded with their attention mask, as both GPT decoders take them."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder inputs (B, S) right-padded with their mask, as both T5 encoders take them."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def ours(model: Any, beams: int, new_tokens: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def run(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return generate(model, ids, new_tokens, attention_mask=mask, num_beams=beams)  # (B, new_tokens)

    return run


def theirs(
    hf: Any, beams: int, new_tokens: int, causal: bool, pad_id: int
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def run(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,  # no early end: both sides make the same number of tokens
            num_beams=beams,
            do_sample=False,
            pad_token_id=pad_id,
        )
        # a causal LM returns prompt + new tokens; T5 returns the decoder start token + new tokens
        return out[:, ids.shape[1] :] if causal else out[:, 1:]

    return run


def timed(fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    with torch.inference_mode():
        out = fn(*args)
    return time.perf_counter() - started, out


def compare_cell(
    name: str, ours_fn: Callable, theirs_fn: Callable, ours_first: Callable, theirs_first: Callable,
    ids: torch.Tensor, mask: torch.Tensor, new_tokens: int, reps: int,
) -> dict[str, Any]:  # fmt: skip
    """One (model, mode, batch) cell: alternate ours and theirs, medians of `reps` after a warm-up."""
    for fn in (ours_fn, theirs_fn, ours_first, theirs_first):  # warm-up: allocator, kernels, caches
        timed(fn, ids, mask)
    seconds: dict[str, list[float]] = {"ours": [], "theirs": [], "ours_first": [], "theirs_first": []}
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(reps):
        for key, fn in (
            ("ours", ours_fn),
            ("theirs", theirs_fn),
            ("ours_first", ours_first),
            ("theirs_first", theirs_first),
        ):
            t, out = timed(fn, ids, mask)
            seconds[key].append(t)
            outputs[key] = out
    batch = ids.shape[0]
    ours_tps = batch * new_tokens / statistics.median(seconds["ours"])
    theirs_tps = batch * new_tokens / statistics.median(seconds["theirs"])
    same = (outputs["ours"].shape == outputs["theirs"].shape) and bool(torch.equal(outputs["ours"], outputs["theirs"]))
    rows_same = (
        int((outputs["ours"] == outputs["theirs"]).all(dim=1).sum())
        if outputs["ours"].shape == outputs["theirs"].shape
        else 0
    )
    return {
        "cell": name,
        "ours_tokens_per_s": ours_tps,
        "theirs_tokens_per_s": theirs_tps,
        "ratio": ours_tps / theirs_tps,
        "ours_ttft_ms": 1000 * statistics.median(seconds["ours_first"]),
        "theirs_ttft_ms": 1000 * statistics.median(seconds["theirs_first"]),
        "identical_rows": f"{rows_same}/{batch}",
        "identical": same,
    }


def bench_model(
    label: str, model: Any, hf: Any, causal: bool, prompts: list[list[int]], pad_id: int,
    batches: list[int], new_tokens: int, reps: int,
) -> list[dict[str, Any]]:  # fmt: skip
    model.eval()
    hf.eval()
    pad = left_pad if causal else right_pad
    cells = []
    for mode, beams in MODES.items():
        for batch in batches:
            ids, mask = pad(prompts[:batch], pad_id)
            cell = compare_cell(
                f"{label} {mode} b{batch}",
                ours(model, beams, new_tokens),
                theirs(hf, beams, new_tokens, causal, pad_id),
                ours(model, beams, 1),
                theirs(hf, beams, 1, causal, pad_id),
                ids,
                mask,
                new_tokens,
                reps,
            )
            cells.append(cell)
            speeds = f"ours {cell['ours_tokens_per_s']:8.0f} tok/s  theirs {cell['theirs_tokens_per_s']:8.0f}"
            ttft = f"ttft {cell['ours_ttft_ms']:6.1f} / {cell['theirs_ttft_ms']:6.1f} ms"
            print(f"  {cell['cell']:<18} {speeds}  {ttft}  identical {cell['identical_rows']}", flush=True)
    return cells


def exported(loaded: LoadedModel, causal: bool) -> Any:
    """The folder through `llm-pipeline export` and back through from_pretrained."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from llm_pipeline.export import export_hf

    with tempfile.TemporaryDirectory() as tmp:
        export_hf(loaded.folder, tmp)
        auto = AutoModelForCausalLM if causal else AutoModelForSeq2SeqLM
        return auto.from_pretrained(tmp, attn_implementation="sdpa")


def folder_prompts(loaded: LoadedModel, texts: pd.DataFrame, n: int, prompt_tokens: int) -> list[list[int]]:
    if loaded.family == "t5":
        return seq2seq_sources(loaded, texts.head(n))
    return [loaded.tokenizer.encode(text).ids[:prompt_tokens] for text in texts[TEXT_COLUMN].head(n)]


def smoke_models() -> list[tuple[str, Any, Any, bool, list[list[int]], int]]:
    """Tiny random GPT and T5 with their transformers twins (models/hf_convert), no folders needed."""
    from llm_pipeline.models.gpt import GPT, GPT_PRESETS, GPTConfig
    from llm_pipeline.models.hf_convert import to_hf
    from llm_pipeline.models.t5 import T5, T5_PRESETS, T5Config

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=97, **GPT_PRESETS["tiny"]))
    t5 = T5(T5Config(vocab_size=97, **T5_PRESETS["tiny"]))
    gen = torch.Generator().manual_seed(1)
    prompts = [
        torch.randint(3, 97, (int(torch.randint(3, 9, (1,), generator=gen)),), generator=gen).tolist() for _ in range(4)
    ]
    return [
        ("gpt", gpt, to_hf(gpt), True, prompts, 0),
        ("t5", t5, to_hf(t5), False, prompts, t5.config.pad_id),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="see the module docstring")
    parser.add_argument("--gpt", type=Path, help="a GPT model folder (data/pretrain/gpt)")
    parser.add_argument("--t5", type=Path, help="a fine-tuned T5 folder (data/finetune/translation-t5)")
    parser.add_argument("--texts", type=Path, help="parquet with the prompts' texts: `input` (and `lang`) columns")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32, help="GPT prompt length, tokens")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny random models, 8 new tokens, batch 1 and 4")
    parser.add_argument("--out", type=Path, help="write the cells as JSON here")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.smoke:
        args.new_tokens, batches, args.reps = 8, [1, 4], 1
        models = smoke_models()
    else:
        if not (args.texts and (args.gpt or args.t5)):
            parser.error("give --texts and --gpt and/or --t5 (or --smoke)")
        texts = pd.read_parquet(args.texts).rename(columns={"input": TEXT_COLUMN})
        models = []
        for folder in (args.gpt, args.t5):
            if folder is None:
                continue
            loaded = load_model_folder(folder)
            causal = loaded.family == "gpt"
            pad_id = int(loaded.manifest.get("pad_id", 0) or 0)
            prompts = folder_prompts(loaded, texts, max(batches), args.prompt_tokens)
            models.append((loaded.family, loaded.model, exported(loaded, causal), causal, prompts, pad_id))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.new_tokens} new tokens", flush=True)
    cells = []
    for label, model, hf, causal, prompts, pad_id in models:
        cells += bench_model(label, model, hf, causal, prompts, pad_id, batches, args.new_tokens, args.reps)
    for cell in cells:
        print(f"ratio {cell['cell']} {cell['ratio']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(cells, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
