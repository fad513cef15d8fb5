"""The steps of bench/gpu.sh, one per call, each appending its JSON record to <out>/results.jsonl.

    python bench/gpu_check.py STEP --out DIR [--work DIR] [--cpu-smoke]

STEP, in the order gpu.sh runs them:
  env         torch, CUDA, the card, its bf16 peak from the data sheet and a measured matmul peak
  gpt         `llm-pipeline pretrain gpt` at gpt2-124m, bf16, compiled: tokens/s and MFU
  gpt-modern  the same with gpt2-124m-modern (RoPE, RMSNorm, SwiGLU)
  families    BERT-base and T5-small training steps/s (bench/train_step.py, ours vs transformers)
  fsdp        the stage under `trainer.strategy: fsdp` on one GPU: it wraps, checkpoints, and a
              second run resumed from its mid-run checkpoint ends on the same weights
  resume      SIGKILL the stage after a checkpoint, rerun: it resumes, and ends where a run
              never stopped ends (bitwise on CPU; within bf16's nondeterminism on a GPU)
  pipeline    a make-run-shaped chain through the stage CLIs at GPU presets: pretrain gpt and
              bert, fine-tune a classifier, evaluate it beside its baselines
  table       results.jsonl -> table.md (the README's table)

Everything runs on a synthetic corpus made here (no network); the first training step makes it
under --work. `--cpu-smoke` runs every step at tiny sizes on the CPU (FSDP needs CUDA, so its
step uses the default strategy there and says so): `make test` runs it, so the script is known
to work before a GPU sees it. A failed step writes {"ok": false, "error": ...} and the next runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # a checkout without `pip install -e`, as on a bare GPU machine
sys.path.insert(0, str(REPO / "bench"))

# the sizes of each mode: a GPU hour's, and the CPU smoke test's (same steps, tiny)
GPU = {
    "corpus_mb": 8.0,
    "topic_docs": 3000,
    "vocab": 8192,
    "preset": "gpt2-124m",
    "batch": 16,
    "steps": 100,
    "precision": "bf16-mixed",
    "compile": True,
    "accelerator": "gpu",
    "matmul": 8192,
    "families": [("bert", "bert-base", 512), ("t5", "t5-small", 512)],
}
SMOKE = {
    "corpus_mb": 0.3,
    "topic_docs": 300,
    "vocab": 600,
    "preset": "tiny",
    "batch": 4,
    "steps": 40,  # ~1 s of training: a kill after the first checkpoint lands mid-run
    "precision": "32-true",
    "compile": False,  # inductor's C++ build alone would take the smoke test's minutes
    "accelerator": "cpu",
    "matmul": 512,
    "families": [("bert", "tiny", 32), ("t5", "tiny", 32)],
}


class StepFailed(Exception):
    """A step's own check did not hold: recorded as {"ok": false, "error": <message>}."""


def record(out: Path, step: str, **fields: Any) -> dict[str, Any]:
    """Append one step's result to results.jsonl (at once: a cut run keeps what it had)."""
    entry = {"step": step, **fields}
    with open(out / "results.jsonl", "a") as fh:
        fh.write(json.dumps(entry) + "\n")
    print(json.dumps(entry), flush=True)
    return entry


def cli_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "LLM_PIPELINE_TRACKING": "off", "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def stage_command(stage: str, *args: str, sets: dict[str, Any] | None = None) -> list[str]:
    command = [sys.executable, "-m", "llm_pipeline.cli", stage, *args]
    for key, value in (sets or {}).items():
        command += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return command


def run_stage(cwd: Path, command: list[str], log: Path) -> None:
    """Run one stage CLI in the project; its output goes to `log`; a failure raises its last line."""
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(command)}\n")
        fh.flush()
        done = subprocess.run(command, cwd=cwd, env=cli_env(), stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        raise StepFailed(f"{command[3]} exited {done.returncode}: {lines[-1] if lines else '(no output)'}")


# --- the synthetic project -------------------------------------------------------------------


def project(work: Path, size: dict[str, Any]) -> Path:
    """A project with ingested and tokenized synthetic text (made once, kept under `work`)."""
    root = work / "project"
    if (root / "data" / "tokenize" / "bpe" / "manifest.json").is_file():
        return root
    import yaml
    from ingest_scale import make_corpus  # bench/: Zipf-distributed made-up words, seeded

    corpus = work / "corpus.jsonl"
    make_corpus(corpus, size["corpus_mb"], seed=0)
    topics = write_topics(work / "topics.jsonl", size["topic_docs"])
    (root / "params").mkdir(parents=True, exist_ok=True)
    off = {"enabled": False}
    ingest = {
        "snapshot_dir": None,
        "progress": False,
        "sources": [{"kind": "jsonl", "path": str(corpus.resolve()), "name": "synthetic"}],
        "tasks": {t: off for t in ("classification", "summarization", "translation", "qa", "nsp", "generation")}
        | {
            "local": [
                {
                    "name": "topics",
                    "kind": "classification",
                    "path": str(topics),
                    "format": "jsonl",
                    "input_field": "text",
                    "target_field": "label",
                }
            ]
        },
    }
    tokenize = {"progress": False, "tokenizers": {"bpe": {"kind": "bpe", "vocab_size": size["vocab"]}}}
    (root / "params" / "ingest.yaml").write_text(yaml.safe_dump(ingest))
    (root / "params" / "tokenize.yaml").write_text(yaml.safe_dump(tokenize))
    # one family; each run sets its size, precision and steps with --set (gpt_sets)
    pretrain = {"families": {"gpt": {"tokenizer": "bpe", "optim": {"lr": 6e-4}, "trainer": {"seed": 1337}}}}
    (root / "params" / "pretrain.yaml").write_text(yaml.safe_dump(pretrain))
    log = work / "project.log"
    run_stage(root, stage_command("ingest"), log)
    run_stage(root, stage_command("tokenize", "bpe"), log)
    return root


def write_topics(path: Path, docs: int, seed: int = 1) -> Path:
    """A local classification task: each document draws most of its words from its topic's own
    made-up vocabulary and the rest from a shared one, so the label is learnable from the text."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))

    def vocabulary(n: int) -> list[str]:
        return ["".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(n)]

    shared, labels = vocabulary(2000), ["astronomy", "cooking", "sailing"]
    own = {label: vocabulary(300) for label in labels}
    with open(path, "w") as fh:
        for i in range(docs):
            label = labels[i % len(labels)]
            words = [
                own[label][rng.integers(300)] if rng.random() < 0.3 else shared[rng.integers(2000)]
                for _ in range(rng.integers(20, 60))
            ]
            fh.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path.resolve()


def gpt_sets(size: dict[str, Any], preset: str, out: Path, **trainer: Any) -> dict[str, Any]:
    """--set values for one `llm-pipeline pretrain gpt` run writing under `out`."""
    base = {
        "accelerator": size["accelerator"],
        "devices": 1,
        "precision": size["precision"],
        "compile": size["compile"],
        "max_steps": size["steps"],
        "val_check_interval": size["steps"],
        "limit_val_batches": 2,
        "log_every_n_steps": max(size["steps"] // 6, 1),
        "enable_progress_bar": False,
    }
    sets: dict[str, Any] = {
        "output_dir": str(out / "model"),
        "checkpoint_root": str(out / "checkpoints"),
        "plots_dir": str(out / "plots"),
        "families.gpt.model.preset": preset,
        "families.gpt.data.batch_size": size["batch"],
        "families.gpt.optim.warmup_steps": max(size["steps"] // 6, 1),
    }
    for key, value in {**base, **trainer}.items():
        sets[f"families.gpt.trainer.{key}"] = value
    return sets


def pretrain_gpt(root: Path, log: Path, sets: dict[str, Any]) -> dict[str, Any]:
    """One pretraining run; its report's metrics (tokens_per_sec, mfu, val/*, train_seconds)."""
    run_stage(root, stage_command("pretrain", "gpt", sets=sets), log)
    report = root / "reports" / "pretrain-gpt.json"
    shutil.copyfile(report, Path(sets["checkpoint_root"]).parent / "report.json")  # the next run overwrites it
    return json.loads(report.read_text())["metrics"]


def weights_gap(a: Path, b: Path) -> dict[str, Any]:
    """How far two model folders' weights are apart: bitwise equal, the largest |difference|."""
    import torch
    from safetensors.torch import load_file

    from llm_pipeline.model_files import MODEL_WEIGHTS

    left, right = load_file(a / MODEL_WEIGHTS), load_file(b / MODEL_WEIGHTS)
    if left.keys() != right.keys():
        raise StepFailed(f"{a} and {b} hold different tensors")
    gaps = [(left[k].float() - right[k].float()).abs().max().item() for k in left]
    return {"bitwise_equal": all(torch.equal(left[k], right[k]) for k in left), "max_abs_diff": max(gaps)}


# --- the steps ------------------------------------------------------------------------------


def step_env(ctx: argparse.Namespace, size: dict[str, Any]) -> dict[str, Any]:
    import torch

    from llm_pipeline.training.throughput import lookup_peak_flops

    cuda = torch.cuda.is_available() and not ctx.cpu_smoke
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine())
    # the measured peak: a square matmul, bf16 on the GPU (fp32 on the CPU smoke), after warm-up
    n, dtype = size["matmul"], torch.bfloat16 if cuda else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 10
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    measured = 2 * n**3 * reps / (time.perf_counter() - started)
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": name,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "datasheet_bf16_flops": lookup_peak_flops(name) if cuda else None,
        "measured_matmul_flops": measured,
        "matmul": f"{n}^3 {str(dtype).removeprefix('torch.')}",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def measured_peak(out: Path) -> float | None:
    """The env step's measured matmul FLOP/s, if it ran."""
    for entry in read_results(out):
        if entry["step"] == "env" and entry.get("ok"):
            return entry.get("measured_matmul_flops")
    return None


def gpt_throughput(ctx: argparse.Namespace, size: dict[str, Any], preset: str) -> dict[str, Any]:
    root = project(ctx.work, size)
    metrics = pretrain_gpt(root, ctx.work / f"{preset}.log", gpt_sets(size, preset, ctx.work / preset))
    if "tokens_per_sec" not in metrics:
        raise StepFailed(f"the pretrain report has no tokens_per_sec: {sorted(metrics)}")
    peak = measured_peak(ctx.out)
    return {
        "preset": preset,
        "precision": size["precision"],
        "compile": size["compile"],
        "steps": metrics["steps"],
        "batch": size["batch"],
        "seq_len": metrics["seq_len"],
        "params": metrics["params"],
        "tokens_per_sec": metrics["tokens_per_sec"],
        "mfu_datasheet": metrics.get("mfu"),  # against the card's dense bf16 peak (None on a CPU)
        "mfu_measured_peak": metrics["model_flops_per_sec"] / peak if peak else None,
        "val_loss": metrics.get("val/loss"),
        "train_seconds": metrics["train_seconds"],
    }


def step_gpt(ctx: argparse.Namespace, size: dict[str, Any]) -> dict[str, Any]:
    return gpt_throughput(ctx, size, size["preset"])


def step_gpt_modern(ctx: argparse.Namespace, size: dict[str, Any]) -> dict[str, Any]:
    return gpt_throughput(ctx, size, f"{size['preset']}-modern")


def step_families(ctx: argparse.Namespace, size: dict[str, Any]) -> dict[str, Any]:
    """bench/train_step.py, one process per (preset, sequence length): the smoke's two tiny
    families share one, a GPU's bert-base and t5-small take one each."""
    groups: dict[tuple[str, int], list[str]] = {}
    for family, preset, seq_len in size["families"]:
        groups.setdefault((preset, seq_len), []).append(family)
    steps = 1 if ctx.cpu_smoke else 5
    result: dict[str, Any] = {}
    for (preset, seq_len), families in groups.items():
        command = [sys.executable, str(REPO / "bench" / "train_step.py"), "--preset", preset]
        command += [arg for family in families for arg in ("--family", family)]
        # no peak-memory runs (two more processes per family): steps/s is the question here
        command += ["--seq-len", str(seq_len), "--batch", str(size["batch"]), "--no-memory"]
        if ctx.cpu_smoke:
            command += ["--device", "cpu", "--warmup", "1", "--steps", str(steps), "--reps", "1"]
        else:
            command += ["--device", "cuda", "--bf16", "--warmup", "3", "--steps", str(steps), "--reps", "3"]
        done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, check=False)
        if done.returncode:
            raise StepFailed(f"train_step.py {families} exited {done.returncode}: {done.stderr.strip()[-300:]}")
        # its stderr ends with one JSON line per family
        for line in done.stderr.strip().splitlines()[-len(families) :]:
            measured = json.loads(line)
            result[measured["family"]] = {
                "preset": preset,
                "seq_len": seq_len,
                "tokens_per_sec": measured["ours"],
                "hf_tokens_per_sec": measured["hf"],
                "ratio_to_hf": measured["ours"] / measured["hf"],
                # seconds: one entry per repetition, each `steps` timed steps
                "steps_per_sec": steps / statistics.median(measured["seconds"]["ours"]),
                "params": measured["params"],
            }
    return result


def step_fsdp(ctx: argparse.Namespace, size: dict[str, Any]) -> dict[str, Any]:
    """Train with FSDP to the end, checkpointing halfway; a second run resumed from the halfway
    checkpoint must end on the first run's weights."""
    root = project(ctx.work, size)
    strategy = "auto" if ctx.cpu_smoke else "fsdp"  # FSDP is refused without CUDA
    half = size["steps"] // 2
    log = ctx.work / "fsdp.log"
    whole = ctx.work / "fsdp-whole"
    # eager: this step checks wrapping, checkpoints and resume, not speed (compiling twice would
    # take a minute of the slot)
    eager = {"strategy": strategy, "compile": False}
    sets = gpt_sets(size, size["preset"], whole, checkpoint_every_n_steps=half, **eager)
    metrics = pretrain_gpt(root, log, sets)
    halfway = whole / "checkpoints" / "pretrain-gpt" / f"step-{half:06d}.ckpt"
    if not halfway.exists():
        raise StepFailed(
            f"no halfway checkpoint {halfway.name} (found: {sorted(p.name for p in halfway.parent.iterdir())})"
        )
    resumed = ctx.work / "fsdp-resumed"
    pretrain_gpt(root, log, gpt_sets(size, size["preset"], resumed, resume=str(halfway), **eager))
    gap = weights_gap(whole / "model" / "gpt", resumed / "model" / "gpt")
    return {
        "strategy": strategy,
        "note": "cpu smoke: the default strategy (FSDP needs CUDA)" if ctx.cpu_smoke else "fsdp, one GPU",
        "steps": metrics["steps"],
        "checkpoint": halfway.name,
        "tokens_per_sec": metrics["tokens_per_sec"],
        **gap,
    }


def checkpointed_steps(folder: Path) -> list[int]:
    """The steps the stage has checkpointed in `folder` (its list is replaced atomically)."""
    from llm_pipeline.training.checkpointing import read_checkpoint_list

    return sorted(entry["step"] for entry in read_checkpoint_list(folder)["checkpoints"].values())


def reference_run(
    ctx: argparse.Namespace, size: dict[str, Any], root: Path, log: Path, compile: bool
) -> tuple[Path, dict]:
    """An uninterrupted run of the gpt step's params (compiled or not): that step's own run when
    it matches and finished (checkpoint cadence does not change the weights), else one made
    here. (its folder, its report's metrics)"""
    done = any(entry["step"] == "gpt" and entry.get("ok") for entry in read_results(ctx.out))
    if done and compile == size["compile"]:
        folder = ctx.work / size["preset"]
        return folder, json.loads((folder / "report.json").read_text())["metrics"]
    folder = ctx.work / f"reference-{'compiled' if compile else 'eager'}"
    return folder, pretrain_gpt(root, log, gpt_sets(size, size["preset"], folder, compile=compile))


def step_resume(ctx: argparse.Namespace, size: dict[str, Any]) -> dict[str, Any]:
    """An uninterrupted run, and one SIGKILLed a moment after its first checkpoint then rerun."""
    root = project(ctx.work, size)
    log = ctx.work / "resume.log"
    every = max(size["steps"] // 4, 1)
    killed = ctx.work / "resume-killed"
    # eager: on a GPU three eager runs cost less of the slot than two compiled ones
    whole, metrics = reference_run(ctx, size, root, log, compile=False)
    sets = gpt_sets(size, size["preset"], killed, checkpoint_every_n_steps=every, compile=False)
    command = stage_command("pretrain", "gpt", sets=sets)
    with open(log, "a") as fh:
        process = subprocess.Popen(command, cwd=root, env=cli_env(), stdout=fh, stderr=subprocess.STDOUT)
    folder = killed / "checkpoints" / "pretrain-gpt"
    deadline = time.monotonic() + 240
    while not checkpointed_steps(folder):
        if process.poll() is not None:
            raise StepFailed(f"the run ended (exit {process.returncode}) before its first checkpoint")
        if time.monotonic() > deadline:
            process.kill()
            raise StepFailed("no checkpoint within 240 s")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # at once: the tiny smoke run takes ~25 ms a step
    process.wait(timeout=60)
    if process.returncode != -signal.SIGKILL:
        raise StepFailed(f"the run finished (exit {process.returncode}) before the kill landed")
    at_kill = checkpointed_steps(folder)[-1]
    if at_kill >= size["steps"]:
        raise StepFailed(f"the kill landed after the last checkpoint (step {at_kill}): nothing left to resume")
    again = pretrain_gpt(root, log, sets)
    from llm_pipeline.io import read_run_record

    resumed_from = read_run_record(killed / "model" / "gpt").get("resumed_from")
    if not resumed_from:
        raise StepFailed("the rerun did not resume: its run record names no checkpoint")
    gap = weights_gap(whole / "model" / "gpt", killed / "model" / "gpt")
    loss_gap = abs(again.get("val/loss", float("nan")) - metrics.get("val/loss", float("nan")))
    # CPU: exact; a GPU's bf16 kernels (atomics in attention's backward) are not bitwise
    # deterministic, so there the val loss must agree to within 0.02 nats
    if ctx.cpu_smoke and not gap["bitwise_equal"]:
        raise StepFailed(f"resumed weights differ on CPU (max |diff| {gap['max_abs_diff']:.3g})")
    if not loss_gap <= 0.02:
        raise StepFailed(f"the resumed run's val loss is {loss_gap:.4f} from the uninterrupted run's")
    return {"killed_after_step": at_kill, "resumed_from": Path(resumed_from).name, "val_loss_gap": loss_gap, **gap}


def step_pipeline(ctx: argparse.Namespace, size: dict[str, Any]) -> dict[str, Any]:
    """make run's shape through the stage CLIs: pretrain GPT, fine-tune a classifier on the
    project's local `topics` task, evaluate both beside their baselines (the majority label,
    TF-IDF + logistic regression; the unigram/bigram LMs)."""
    import yaml

    root = project(ctx.work, size)
    log, out = ctx.work / "pipeline.log", ctx.work / "pipeline"
    started = time.perf_counter()
    folder, pretrained = reference_run(ctx, size, root, log, size["compile"])  # the gpt step's pretraining
    sets = gpt_sets(size, size["preset"], out)
    trainer = {k.removeprefix("families.gpt.trainer."): v for k, v in sets.items() if ".trainer." in k}
    trainer["compile"] = False  # a fine-tune of a few steps: compiling would take most of its time
    run = {
        "task": "topics",
        "family": "gpt",
        "max_len": 64,
        "batch_size": size["batch"],
        "optim": {"lr": 1e-3, "warmup_steps": max(size["steps"] // 6, 1)},
        "trainer": trainer,
    }
    finetune = {
        "pretrain_root": str(folder / "model"),
        "output_dir": str(out / "finetuned"),
        "checkpoint_root": str(out / "checkpoints"),
        "plots_dir": str(out / "plots"),
        "runs": {"topics-gpt": run},
    }
    (root / "params" / "finetune.yaml").write_text(yaml.safe_dump(finetune))
    run_stage(root, stage_command("finetune", "topics-gpt"), log)
    evaluate = {
        "families": ["gpt"],
        "pretrain_root": str(folder / "model"),
        "finetune_root": str(out / "finetuned"),
        "max_test_tokens": 20000,
        "samples": {"prompts": ["The"], "max_new_tokens": 8},
    }
    (root / "params" / "evaluate.yaml").write_text(yaml.safe_dump(evaluate))
    run_stage(root, stage_command("evaluate"), log)
    scores = json.loads((root / "reports" / "evaluate.json").read_text())["metrics"]
    picked = {
        key.removeprefix("eval/"): value
        for key, value in scores.items()
        if key.startswith("eval/topics/") and key.endswith("/macro_f1") or key.startswith("eval/lm/")
    }
    if not any(key.startswith("topics/gpt") for key in picked):
        raise StepFailed(f"evaluate scored no topics-gpt macro-F1 (keys: {sorted(scores)[:8]} ...)")
    return {
        "scores": picked,
        "pretrain_tokens_per_sec": pretrained["tokens_per_sec"],
        "finetune_evaluate_seconds": time.perf_counter() - started,
    }


def read_results(out: Path) -> list[dict[str, Any]]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def step_table(ctx: argparse.Namespace, size: dict[str, Any]) -> None:
    """results.jsonl -> table.md; printed too."""

    def fmt(value: Any, spec: str = ".3g") -> str:
        return "-" if value is None else format(value, spec)

    def same(entry: dict[str, Any]) -> str:
        return "bitwise equal" if entry["bitwise_equal"] else f"max |diff| {entry['max_abs_diff']:.2g}"

    rows = ["| step | result | seconds |", "|---|---|---|"]
    for entry in read_results(ctx.out):
        step, seconds = entry["step"], fmt(entry.get("seconds"), ".0f")
        if not entry.get("ok"):
            rows.append(f"| {step} | **failed**: {entry.get('error', '?')} | {seconds} |")
            continue
        if step == "env":
            text = (
                f"{entry['device']}, torch {entry['torch']}, CUDA {entry['cuda']}; matmul {entry['matmul']}: "
                f"{fmt(entry['measured_matmul_flops'] / 1e12)} TFLOP/s measured, "
                f"{fmt((entry['datasheet_bf16_flops'] or 0) / 1e12 or None)} data sheet"
            )
        elif step in ("gpt", "gpt-modern"):
            text = (
                f"{entry['preset']} {entry['precision']}{' compiled' if entry['compile'] else ''}, "
                f"batch {entry['batch']} x {entry['seq_len']}: {entry['tokens_per_sec']:,.0f} tokens/s, "
                f"MFU {fmt(entry['mfu_datasheet'], '.1%')} (data sheet) / "
                f"{fmt(entry['mfu_measured_peak'], '.1%')} (measured peak)"
            )
        elif step == "families":
            text = "; ".join(
                f"{f} {v['preset']}: {v['steps_per_sec']:.2f} steps/s ({v['ratio_to_hf']:.2f}x transformers)"
                for f, v in entry.items()
                if isinstance(v, dict)
            )
        elif step == "fsdp":
            text = f"{entry['note']}: resumed from {entry['checkpoint']}, weights {same(entry)}"
        elif step == "resume":
            text = (
                f"SIGKILL after step {entry['killed_after_step']}, resumed from {entry['resumed_from']}: "
                f"weights {same(entry)}, val loss gap {entry['val_loss_gap']:.4f}"
            )
        elif step == "pipeline":
            score = entry["scores"]
            text = (
                f"pretrain -> fine-tune -> evaluate: topics-gpt macro-F1 {score['topics/gpt/macro_f1']:.3f} "
                f"(majority {score['topics/majority/macro_f1']:.3f}, TF-IDF + LR "
                f"{score['topics/tfidf_logreg/macro_f1']:.3f}); GPT test ppl {score['lm/gpt/ppl']:.1f} "
                f"(bigram {score['lm/bigram/ppl']:.1f})"
            )
        else:
            text = ", ".join(f"{k} {v}" for k, v in entry.items() if k not in ("step", "ok", "seconds"))
        rows.append(f"| {step} | {text} | {seconds} |")
    table = "\n".join(rows) + "\n"
    (ctx.out / "table.md").write_text(table)
    print(table)


STEPS: dict[str, Callable[[argparse.Namespace, dict[str, Any]], Any]] = {
    "env": step_env,
    "gpt": step_gpt,
    "gpt-modern": step_gpt_modern,
    "families": step_families,
    "fsdp": step_fsdp,
    "resume": step_resume,
    "pipeline": step_pipeline,
    "table": step_table,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("--out", type=Path, required=True, help="results.jsonl and table.md go here")
    parser.add_argument("--work", type=Path, help="the synthetic project and runs (default: <out>/../gpu-work)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    ctx = parser.parse_args(argv)
    ctx.out.mkdir(parents=True, exist_ok=True)
    ctx.work = (ctx.work or ctx.out.parent / f"{ctx.out.name}-work").resolve()
    ctx.work.mkdir(parents=True, exist_ok=True)
    size = SMOKE if ctx.cpu_smoke else GPU
    if ctx.step == "table":
        step_table(ctx, size)
        return 0
    from llm_pipeline.errors import PipelineError

    started = time.perf_counter()
    try:
        result = STEPS[ctx.step](ctx, size)
    except (StepFailed, PipelineError, OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        record(
            ctx.out,
            ctx.step,
            ok=False,
            error=f"{type(exc).__name__}: {exc}"[:400],
            seconds=time.perf_counter() - started,
        )
        return 1
    record(ctx.out, ctx.step, ok=True, seconds=time.perf_counter() - started, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
