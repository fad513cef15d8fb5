"""Training-step throughput of our three families vs their Hugging Face `transformers` twins.

    .venv/bin/python bench/train_step.py                      # gpt, bert, t5 at small-cpu, fp32, 2 threads
    .venv/bin/python bench/train_step.py --family gpt --preset gpt2-124m --seq-len 1024 --batch 8 \\
        --device cuda --bf16                                  # on a GPU: adds MFU
    .venv/bin/python bench/train_step.py --family gpt --preset small-cpu-modern   # vs LlamaForCausalLM

One step = forward + loss + backward + AdamW step + zero_grad. Ours goes through the engine's
own loss path (the registry's objective for the family: `get_family(f).objective().compute`;
our models return logits only); theirs is GPT2LMHeadModel (LlamaForCausalLM for a modern GPT
preset) / BertForPreTraining / T5ForConditionalGeneration computing its own loss, with the same
shape, the same weights (llm_pipeline.models.hf_convert), SDPA attention where HF has it, the
same batch and thread count. Both models live in one
process and alternate, --reps times --steps timed steps (after --warmup), and the medians are
compared. Peak memory per step: each side runs alone in a fresh child process; the peak RSS
(VmHWM, reset just before the first step) minus the RSS at that moment, i.e. what the steps
add on top of the weights: activations, gradients, AdamW state. On CUDA: peak allocated bytes.
"""

from __future__ import annotations

import os
import sys

# the repository root on the import path, for a checkout without `pip install -e`
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import functools
import json
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
import torch.nn as nn

from llm_pipeline.data.loaders.masking import MaskingConfig, compute_mlm_masking
from llm_pipeline.data.loaders.span_corruption import collate_span_corruption
from llm_pipeline.data.loaders.span_masking import SpanCorruptionConfig, compute_raw_length, corrupt_spans
from llm_pipeline.families import build_model, get_family
from llm_pipeline.models import BERT, GPT, IGNORE_INDEX, T5
from llm_pipeline.models.base import FamilyModel
from llm_pipeline.models.hf_convert import to_hf_bert, to_hf_gpt, to_hf_t5
from llm_pipeline.training.throughput import lookup_peak_flops

HF_IGNORE = -100  # transformers' label id for "no loss here"
BERT_SPECIALS = 5  # ids 0..4: [PAD] [UNK] [CLS] [SEP] [MASK], as the wordpiece tokenizer orders them


def make_batch(family: str, batch: int, seq_len: int, vocab: int, g: torch.Generator) -> dict:
    """A random batch in the engine's layout (labels use our IGNORE_INDEX)."""
    if family == "gpt":
        ids = torch.randint(vocab, (batch, seq_len + 1), generator=g)
        return {"x": ids[:, :-1].contiguous(), "y": ids[:, 1:].contiguous()}
    if family == "bert":  # [CLS] a [SEP] b [SEP], no padding, masked as in pretraining
        ids = torch.randint(BERT_SPECIALS, vocab, (batch, seq_len), generator=g)
        half = seq_len // 2
        ids[:, 0], ids[:, half], ids[:, -1] = 2, 3, 3
        types = (torch.arange(seq_len) > half).long().expand(batch, -1).contiguous()
        corrupted, labels = compute_mlm_masking(ids, MaskingConfig(4, vocab, tuple(range(BERT_SPECIALS))), g)
        return {
            "input_ids": corrupted,
            "token_type_ids": types,
            "attention_mask": torch.ones_like(ids),
            "mlm_labels": labels,
            "nsp_label": torch.randint(2, (batch,), generator=g),
        }
    # t5: span-corrupted windows sized (T5's recipe) so the encoder input is exactly seq_len
    cfg = SpanCorruptionConfig(tuple(range(vocab - 1, vocab - 101, -1)), eos_id=1)
    raw = torch.randint(3, vocab - 100, (batch, compute_raw_length(seq_len)[0]), generator=g)
    return collate_span_corruption([corrupt_spans(row, cfg, g) for row in raw], pad_id=0)


def build_pair(family: str, preset: str, vocab: int) -> tuple[FamilyModel, nn.Module]:
    ours = build_model(family, preset, vocab)
    if family == "gpt":  # GPT-2 style -> GPT2LMHeadModel, modern -> LlamaForCausalLM
        return ours, to_hf_gpt(cast(GPT, ours), attn_implementation="sdpa")
    if family == "bert":
        return ours, to_hf_bert(cast(BERT, ours), attn_implementation="sdpa")
    return ours, to_hf_t5(cast(T5, ours))  # T5's relative position bias: HF has eager attention only


def objective_batch(family: str, batch: dict):
    """The batch as the family's objective takes it: (x, y) for the causal LM, else the dict."""
    return (batch["x"], batch["y"]) if family == "gpt" else batch


def loss_fn(family: str, side: str, model: nn.Module, batch: dict) -> torch.Tensor:
    if side == "ours":  # the model gives logits; the family's objective computes the loss
        return get_family(family).objective().compute(model, objective_batch(family, batch))[0]
    hf_labels = lambda t: t.masked_fill(t == IGNORE_INDEX, HF_IGNORE)
    if family == "gpt":  # HF shifts labels itself (GPT-2 and Llama): inputs are their own labels
        return model(input_ids=batch["x"], labels=batch["x"]).loss
    if family == "bert":
        return model(
            input_ids=batch["input_ids"],
            token_type_ids=batch["token_type_ids"],
            attention_mask=batch["attention_mask"],
            labels=hf_labels(batch["mlm_labels"]),
            next_sentence_label=batch["nsp_label"],
        ).loss
    return model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        decoder_input_ids=batch["decoder_input_ids"],
        labels=hf_labels(batch["labels"]),
    ).loss


def make_step(
    family: str, side: str, model: nn.Module, batch: dict, bf16: bool, compile_loss: bool = False
) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device_type = next(model.parameters()).device.type

    compute: Callable[[], torch.Tensor] = functools.partial(loss_fn, family, side, model, batch)
    if compile_loss:  # ours: model and objective compiled together, as the trainer's compile does
        compute = torch.compile(compute)

    def step() -> None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            loss = compute()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(step: Callable[[], None], steps: int, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def count_tokens(family: str, batch: dict) -> int:
    if family == "gpt":
        return batch["x"].numel()
    if family == "bert":
        return int(batch["attention_mask"].sum())
    return int(batch["attention_mask"].sum()) + int((batch["labels"] != IGNORE_INDEX).sum())


def setup(args: argparse.Namespace, family: str) -> tuple[dict, dict[str, nn.Module]]:
    torch.manual_seed(0)
    batch = make_batch(family, args.batch, args.seq_len, args.vocab, torch.Generator().manual_seed(0))
    ours, theirs = build_pair(family, args.preset, args.vocab)
    models: dict[str, nn.Module] = {"ours": ours, "hf": theirs}
    for model in models.values():
        model.train().to(args.device)
        if args.compile and model is theirs:  # HF's loss is inside its forward: compiling the model compiles it
            model.compile()
    return {k: v.to(args.device) for k, v in batch.items()}, models


def bench_speed(args: argparse.Namespace, family: str) -> dict:
    batch, models = setup(args, family)
    steps = {
        side: make_step(family, side, m, batch, args.bf16, args.compile and side == "ours")
        for side, m in models.items()
    }
    for step in steps.values():
        timed(step, args.warmup, args.device)
    seconds: dict[str, list[float]] = {"ours": [], "hf": []}
    for rep in range(args.reps):
        order = ("ours", "hf") if rep % 2 == 0 else ("hf", "ours")  # neither side always goes first
        for side in order:
            seconds[side].append(timed(steps[side], args.steps, args.device))
    tokens = count_tokens(family, batch) * args.steps
    result = {side: tokens / statistics.median(s) for side, s in seconds.items()}
    result["seconds"] = seconds
    result["params"] = sum(p.numel() for p in models["ours"].parameters())
    result["flops_per_step"] = models_flops(family, cast(FamilyModel, models["ours"]), batch)  # build_pair's
    return result


def models_flops(family: str, model: FamilyModel, batch: dict) -> float:
    return get_family(family).objective().count_flops(model, objective_batch(family, batch))


def peak_memory_child(args: argparse.Namespace, family: str, side: str) -> int:
    """Bytes the training steps add on top of the built model (run in a fresh process)."""
    batch, models = setup(args, family)
    model = models[side]
    del models  # the other side's weights out of the picture
    step = make_step(family, side, model, batch, args.bf16, args.compile and side == "ours")
    if args.compile:  # compile first: its own memory is not the step's
        timed(step, args.warmup, args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        timed(step, 2, args.device)
        return torch.cuda.max_memory_allocated() - before
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    before = _status_kb("VmRSS")
    timed(step, 2, args.device)
    return (_status_kb("VmHWM") - before) * 1024


def _status_kb(key: str) -> int:
    match = re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text())
    assert match is not None, f"no {key} in /proc/self/status"
    return int(match.group(1))


def bench_memory(args: argparse.Namespace, family: str, side: str) -> int:
    child = [sys.executable, __file__, *sys.argv[1:], "--family", family, "--memory-child", side]
    out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", action="append", choices=["gpt", "bert", "t5"], help="repeatable; default: all three")
    p.add_argument("--preset", default="small-cpu", help="our preset name (the same for each family)")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128, help="gpt/bert sequence; t5 encoder input (target: ~23%%)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps per repetition")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="autocast to bf16 (GPU); default fp32")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile both models (inductor); warmup steps absorb compilation"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs (a child process per side)")
    p.add_argument("--memory-child", choices=["ours", "hf"], help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    families = args.family or ["gpt", "bert", "t5"]
    if args.memory_child:
        print(peak_memory_child(args, families[-1], args.memory_child))
        return
    import transformers

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {device_name}, {os.cpu_count()} CPUs; torch {torch.__version__}, transformers "
        f"{transformers.__version__}; threads {torch.get_num_threads()}; "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}{'; both compiled' if args.compile else '; eager'}; "
        f"batch {args.batch} x seq {args.seq_len}; "
        f"{args.reps} reps x {args.steps} steps (+{args.warmup} warmup), medians"
    )
    peak = lookup_peak_flops(device_name) if args.device == "cuda" else None
    print(
        f"{'family':<7}{'params':>9}{'ours tok/s':>12}{'HF tok/s':>11}{'ratio':>7}"
        f"{'ours MiB/step':>15}{'HF MiB/step':>13}" + ("   MFU ours" if peak else "")
    )
    for family in families:
        speed = bench_speed(args, family)
        memory = {
            side: float("nan") if args.no_memory else bench_memory(args, family, side) / 2**20
            for side in ("ours", "hf")
        }
        line = (
            f"{family:<7}{speed['params'] / 1e6:>8.2f}M{speed['ours']:>12,.0f}{speed['hf']:>11,.0f}"
            f"{speed['ours'] / speed['hf']:>6.2f}x{memory['ours']:>15.0f}{memory['hf']:>13.0f}"
        )
        if peak:
            tokens_per_step = count_tokens(
                family, make_batch(family, args.batch, args.seq_len, args.vocab, torch.Generator().manual_seed(0))
            )
            line += f"{speed['flops_per_step'] / tokens_per_step * speed['ours'] / peak:>10.1%}"
        print(line, flush=True)
        print(json.dumps({"family": family, **speed, **{f"{k}_mib": v for k, v in memory.items()}}), file=sys.stderr)


if __name__ == "__main__":
    main()
