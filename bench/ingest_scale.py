"""Ingest and tokenize as the corpus grows and as workers are added: time, throughput, peak memory.

    .venv/bin/python bench/ingest_scale.py --base-mb 64                  # 1x, 4x, 16x; 1 and 2 workers
    .venv/bin/python bench/ingest_scale.py --base-mb 2 --scales 1,4 --no-tokenize   # a quick look

Synthetic unique documents (seeded: 50-400 words drawn from a Zipf law over 60k made-up words,
as jsonl) go through the public CLI (`llm-pipeline ingest`, then `llm-pipeline tokenize bpe`)
with tasks off and near dedup on, in a folder per run under --out. Peak RSS is the whole
process tree (the stage, its forkserver and its workers), sampled every 50 ms. Workers: ingest's
`engine.workers`; tokenize's Rust threads (RAYON_RS_NUM_CPUS). Prints a table, then on lines of
their own `rss ratio <peak at the largest scale / peak at the one before>` (1 worker) and
`speedup ratio <1-worker time / 2-worker time>` of ingest at the largest scale, and
`tokenize rss ratio` likewise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

CLI = Path(sys.executable).with_name("llm-pipeline")
VOCAB = 60_000


def make_corpus(path: Path, megabytes: float, seed: int) -> int:
    """Write ~`megabytes` of unique jsonl documents; returns the document count (cached by path)."""
    done = path.with_suffix(".count")
    if done.exists():
        return int(done.read_text())
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(VOCAB)]
    weights = 1.0 / np.arange(1, VOCAB + 1)  # Zipf: a few words everywhere, most rare
    weights /= weights.sum()
    target, written, docs = int(megabytes * 1_000_000), 0, 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        while written < target:
            lengths = rng.integers(50, 400, 1000)
            ids = rng.choice(VOCAB, int(lengths.sum()), p=weights)
            for doc in np.split(ids, np.cumsum(lengths)[:-1]):
                line = json.dumps({"text": " ".join(words[i] for i in doc)}) + "\n"
                f.write(line)
                written += len(line)
                docs += 1
                if written >= target:
                    break
    done.write_text(str(docs))
    return docs


def run_measured(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    """(seconds, peak RSS bytes of the process tree) of `command`; raises on failure."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, root = 0, psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    sampler.join()
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"{' '.join(command)} failed in {cwd}:\n{output[-3000:]}")
    return seconds, peak


def write_params(run_dir: Path, corpus: Path, workers: int) -> None:
    params = run_dir / "params"
    params.mkdir(parents=True, exist_ok=True)
    off = {"enabled": False}
    ingest = {
        "snapshot_dir": None,
        "progress": False,
        "sources": [{"kind": "jsonl", "path": str(corpus), "name": "synthetic"}],
        "engine": {"kind": "local", "workers": workers, "chunk_mb": 8},
        "tasks": {t: off for t in ("classification", "summarization", "translation", "qa", "nsp", "generation")},
    }
    tokenize = {
        "tokenizers": {"bpe": {"kind": "bpe", "vocab_size": 8192, "min_frequency": 2}},
        "progress": False,
    }
    (params / "ingest.yaml").write_text(yaml.safe_dump(ingest))
    (params / "tokenize.yaml").write_text(yaml.safe_dump(tokenize))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-mb", type=float, default=64, help="text at 1x (MB of jsonl)")
    ap.add_argument("--scales", default="1,4,16", help="multiples of the base")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare")
    ap.add_argument("--no-tokenize", action="store_true", help="ingest only")
    ap.add_argument("--out", type=Path, default=Path("bench/results/ingest_scale"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    scales = [float(s) for s in args.scales.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    env = os.environ | {"LLM_PIPELINE_TRACKING": "off"}
    rows = []
    for scale in scales:
        mb = args.base_mb * scale
        corpus = args.out / "corpora" / f"{mb:g}mb.jsonl"
        docs = make_corpus(corpus, mb, args.seed)
        size = corpus.stat().st_size / 1e6
        for n in workers:
            run_dir = args.out / "runs" / f"{scale:g}x-w{n}"
            shutil.rmtree(run_dir, ignore_errors=True)
            write_params(run_dir, corpus.resolve(), n)
            stages = [("ingest", [str(CLI), "ingest"], env)]
            if not args.no_tokenize:
                stages.append(("tokenize", [str(CLI), "tokenize", "bpe"], env | {"RAYON_RS_NUM_CPUS": str(n)}))
            for stage, command, stage_env in stages:
                seconds, peak = run_measured(command, run_dir, stage_env)
                row = {
                    "stage": stage,
                    "scale": scale,
                    "mb": round(size, 1),
                    "documents": docs,
                    "workers": n,
                    "seconds": round(seconds, 1),
                    "docs_per_s": round(docs / seconds),
                    "mb_per_s": round(size / seconds, 2),
                    "peak_rss_gb": round(peak / 1e9, 3),
                }
                rows.append(row)
                print(
                    f"{stage:8s} {scale:>4g}x {size:8.1f} MB {docs:>9,} docs  {n} worker(s)  {seconds:7.1f} s  "
                    f"{row['docs_per_s']:>8,} docs/s  {row['mb_per_s']:6.2f} MB/s  "
                    f"peak RSS {row['peak_rss_gb']:.2f} GB",
                    flush=True,
                )
            shutil.rmtree(run_dir / "data", ignore_errors=True)

    def pick(stage: str, scale: float, n: int) -> dict:
        return next(r for r in rows if r["stage"] == stage and r["scale"] == scale and r["workers"] == n)

    lines = []
    if len(scales) > 1:
        top, before = pick("ingest", scales[-1], workers[0]), pick("ingest", scales[-2], workers[0])
        lines.append(f"rss ratio {top['peak_rss_gb'] / before['peak_rss_gb']:.2f}")
        if not args.no_tokenize:  # tokenize's too, on a line of its own that names it
            top, before = pick("tokenize", scales[-1], workers[0]), pick("tokenize", scales[-2], workers[0])
            lines.append(f"tokenize rss ratio {top['peak_rss_gb'] / before['peak_rss_gb']:.2f}")
    if len(workers) > 1:
        one, two = pick("ingest", scales[-1], workers[0]), pick("ingest", scales[-1], workers[1])
        lines.append(f"speedup ratio {one['seconds'] / two['seconds']:.2f}")
    for line in lines:
        print(line)
    provenance = {
        "command": " ".join(["bench/ingest_scale.py", *(argv if argv is not None else sys.argv[1:])]),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }
    (args.out / "ingest_scale.json").write_text(json.dumps({"rows": rows, "ratios": lines, **provenance}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
