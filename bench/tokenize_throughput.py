"""Encode throughput of the tokenize stage vs a bare `tokenizers` loop, and the stage's peak RSS.

    .venv/bin/python bench/tokenize_throughput.py            # default corpus: data/ingest (make it: dvc repro ingest)

Same tokenizer file, same text, same batch size, in one process; the two are alternated for
--reps repetitions and the medians compared. "ours" is the stage's own code path (parquet ->
encode -> shard file on disk); "bare" is `encode_batch` over texts already in memory, and
`encode_batch_fast` (what the stage calls: no character offsets). Peak RSS is the whole stage
(every tokenizer in params/tokenize.yaml trained and encoded) in a child process.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import tokenizers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llm_pipeline.data.tokenization.shards import token_dtype
from llm_pipeline.data.tokenization.tokenizer import EOT, load_tokenizer
from llm_pipeline.stages.tokenize import SPLITS, encode_split, iter_text_batches

STAGE_CHILD = """
import sys
from llm_pipeline.config import load_config
from llm_pipeline.stages import tokenize
from llm_pipeline.tracking.runs import NULL_TRACKER
cfg = load_config(tokenize.TokenizeConfig, sys.argv[1], sys.argv[2:])
tokenize.run(cfg, NULL_TRACKER)
"""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], int]) -> tuple[float, float, int]:
    """(wall s, cpu s across all threads, tokens)"""
    wall, cpu = time.perf_counter(), cpu_seconds()
    tokens = fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu, tokens


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    env = {k: os.environ[k] for k in ("RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM") if k in os.environ}
    return (
        f"{len(os.sched_getaffinity(0))} cores usable (nproc), {model}, load avg {os.getloadavg()[0]:.2f}, "
        f"tokenizers {tokenizers.__version__}, python {platform.python_version()}, env {env or '{}'}"
    )


def bench_encode(args, tokenizer_path: Path) -> None:
    tok = load_tokenizer(tokenizer_path)
    sep, dtype = cast(int, tok.token_to_id(EOT)), token_dtype(tok.get_vocab_size())  # a BPE tokenizer: EOT is in it
    parquets = [args.corpus / "corpus" / f"{s}.parquet" for s in SPLITS]
    texts = [t for p in parquets for batch in iter_text_batches(p, args.batch_docs) for t in batch]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    batches = [texts[i : i + args.batch_docs] for i in range(0, len(texts), args.batch_docs)]
    print(f"corpus: {len(texts)} documents, {mb:.1f} MB of UTF-8 text ({', '.join(p.name for p in parquets)})")

    def ours() -> int:
        with tempfile.TemporaryDirectory() as tmp:
            return sum(
                encode_split(tok, p, Path(tmp) / f"{p.stem}.bin", sep, dtype, args.batch_docs).tokens for p in parquets
            )

    def bare(method: str) -> Callable[[], int]:
        encode = getattr(tok, method)
        return lambda: sum(len(e) + 1 for b in batches for e in encode(b, add_special_tokens=False))

    before = thread_count()
    tok.encode_batch(batches[0])  # warm-up; starts the rayon pool that encodes in parallel
    pool = thread_count() - before
    runs = {"ours (stage: parquet -> shard)": ours, "bare encode_batch": bare("encode_batch")}
    if hasattr(tok, "encode_batch_fast"):
        runs["bare encode_batch_fast"] = bare("encode_batch_fast")
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runs}
    for _ in range(args.reps):  # alternate, so load changes hit every variant alike
        for name, fn in runs.items():
            results[name].append(timed(fn))

    print(
        f"\nencode, {args.reps} alternating reps, medians, batch {args.batch_docs} docs "
        f"({pool} worker threads started by tokenizers):"
    )
    print(f"{'':34}{'MB/s':>8}{'Mtok/s':>9}{'cores busy':>12}{'MB/cpu-s':>10}")
    wall, cpu = {}, {}
    for name, rows in results.items():
        wall[name] = statistics.median(r[0] for r in rows)
        cpu[name] = statistics.median(r[1] for r in rows)
        tokens = rows[0][2]
        print(
            f"{name:34}{mb / wall[name]:8.2f}{tokens / wall[name] / 1e6:9.3f}"
            f"{cpu[name] / wall[name]:12.2f}{mb / cpu[name]:10.2f}"
        )
    ours_name = next(iter(runs))
    assert len({rows[0][2] for rows in results.values()}) == 1, "variants disagree on the token count"
    print(f"tokens per run: {results[ours_name][0][2]}")
    for name in list(runs)[1:]:
        print(
            f"ratio ours / {name}: {wall[name] / wall[ours_name]:.2f}x wall (target >= 0.9x), "
            f"{cpu[name] / cpu[ours_name]:.2f}x cpu time"
        )


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def run_stage(args, out: str, only: str | None = None) -> tuple[float, float]:
    """The tokenize stage as its own process (tracking off) writing into `out`: (peak RSS MiB, s)."""
    overrides = [f"input_dir={args.corpus}", f"output_dir={out}", "progress=false"] + ([f"item={only}"] if only else [])
    wall = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", STAGE_CHILD, str(args.params), *overrides],
        check=True,
        env={**os.environ, "LLM_PIPELINE_TRACKING": "off"},
        stdout=subprocess.DEVNULL,
    )
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - wall  # KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/ingest"), help="ingest output folder")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=Path("data/tokenize/bpe/tokenizer.json"),
        help="if absent, the bpe tokenizer of a stage run made here",
    )
    parser.add_argument("--params", type=Path, default=Path("params/tokenize.yaml"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch-docs", type=int, default=1000)
    parser.add_argument("--no-rss", action="store_true", help="skip the whole-stage peak RSS run")
    args = parser.parse_args()

    missing = [s for s in SPLITS if not (args.corpus / "corpus" / f"{s}.parquet").is_file()]
    if missing:
        sys.exit(
            f"{args.corpus}/corpus: no {', '.join(missing)} split; make the default corpus first: dvc repro ingest"
        )
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print("machine:", machine())
    with tempfile.TemporaryDirectory() as tmp:
        stage = None if args.no_rss else run_stage(args, tmp)
        tokenizer = args.tokenizer
        if not tokenizer.is_file():  # the bpe the stage just made (in a child: no rayon pool here yet)
            if stage is None:
                run_stage(args, tmp, only="bpe")
            tokenizer = Path(tmp) / "bpe" / "tokenizer.json"
            print(f"{args.tokenizer} absent: using the bpe tokenizer made by the stage run here")
        bench_encode(args, tokenizer)
    if stage is not None:
        print(
            f"\nwhole stage ({args.params}: every tokenizer trained + every split encoded): "
            f"peak RSS {stage[0]:.0f} MiB, {stage[1]:.0f} s"
        )


if __name__ == "__main__":
    main()
