"""tokenize: train each configured tokenizer on the train split, encode every split into a shard.

Inputs : data/ingest/corpus/{train,val,test}.parquet (+ its manifest); the train split of the
         task texts a tokenizer names (task_texts: learnt from; shard_task_texts: appended to train.bin)
Outputs: data/tokenize/<name>/tokenizer.json, {train,val,test}.bin, manifest.json — one folder per
         tokenizer in `tokenizers` (dvc.yaml runs one stage per name: `llm-pipeline tokenize <name>`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow.parquet as pq
from pydantic import Field, field_validator
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from llm_pipeline.config import PerItemConfig, check_folder_names
from llm_pipeline.data.parquet import iter_record_batches
from llm_pipeline.data.tasks.loading import load_task_split
from llm_pipeline.data.tokenization.shards import TokenShards, encode_chunks, iter_documents, token_dtype, write_shards
from llm_pipeline.data.tokenization.tokenizer import (
    TokenizerSpec,
    separator_token,
    special_tokens,
    token_id,
    train_tokenizer,
    unk_rate,
)
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import (
    MANIFEST_NAME,
    atomic_path,
    build_manifest,
    describe_inputs,
    read_manifest,
    read_run_record,
    sha256_file,
    write_json,
    write_run_record,
)
from llm_pipeline.stages.base import StageResult
from llm_pipeline.tracking.runs import Tracker

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
LOSSLESS_KINDS = {"bpe"}  # byte-level: any failed round-trip is a bug, so the stage fails
DEFAULT_TOKENIZERS = {"bpe": {"kind": "bpe"}, "wordpiece": {"kind": "wordpiece"}, "unigram": {"kind": "unigram"}}


class TokenizeConfig(PerItemConfig):
    ITEMS = "tokenizers"  # item: build just this one (dvc.yaml: one stage per name); none: all
    RENAMED = {"only": "item"}
    input_dir: str = "data/ingest"  # ingest's output folder
    output_dir: str = "data/tokenize"  # one sub-folder per tokenizer name
    # cast: plain dicts, which validate_default=True turns into specs (as it does a params file's)
    tokenizers: dict[str, TokenizerSpec] = Field(
        default_factory=lambda: cast(dict[str, TokenizerSpec], dict(DEFAULT_TOKENIZERS))
    )
    encode_batch_docs: int = Field(1000, ge=1)  # documents per encode call: bounds memory
    # tokens per shard file: null writes one <split>.bin per split; a number writes
    # <split>-00000.bin, ... of about that many tokens each (cut between documents)
    max_shard_tokens: int | None = Field(None, ge=1)
    progress: bool = True

    @field_validator("tokenizers")
    @classmethod
    def _folder_names(cls, tokenizers: dict[str, Any]) -> dict[str, Any]:
        check_folder_names(tokenizers)
        return tokenizers


@dataclass
class SplitStats:
    docs: int = 0  # the whole shard's, appended documents included
    chars: int = 0
    tokens: int = 0
    appended: dict[str, SplitStats] = field(default_factory=dict)  # per source of documents after the corpus's
    files: list[str] = field(default_factory=list)  # the split's shard file names, in order


def iter_text_batches(path: Path, batch_docs: int, column: str = "text") -> Iterator[list[str]]:
    """Stream one text column of a parquet file in batches of documents."""
    parquet = pq.ParquetFile(path)
    if column not in parquet.schema_arrow.names:
        raise PipelineError(f"{path}: no {column!r} column (columns: {parquet.schema_arrow.names})")
    for batch in iter_record_batches(parquet, [column], batch_docs):
        yield batch.column(column).to_pylist()


def encode_split(
    tokenizer: Tokenizer,
    parquet: Path,
    shard: Path,
    sep: int,
    dtype: np.dtype,
    batch_docs: int,
    progress: bool = False,
    appended: Mapping[str, Iterable[list[str]]] | None = None,
    max_shard_tokens: int | None = None,
) -> SplitStats:
    """parquet text, then each source's `appended` batches of documents -> `shard` (<folder>/<split>.bin;
    with max_shard_tokens, <split>-NNNNN.bin files), one batch in memory at a time."""

    def encoded(batches: Iterable[list[str]], stats: SplitStats) -> Iterator[np.ndarray]:
        def counted() -> Iterator[list[str]]:
            for texts in batches:
                stats.docs += len(texts)
                stats.chars += sum(map(len, texts))
                yield texts

        for chunk in encode_chunks(tokenizer, counted(), sep, dtype):
            stats.tokens += len(chunk)
            yield chunk

    n_batches = -(-pq.ParquetFile(parquet).metadata.num_rows // batch_docs)
    batches = tqdm(
        iter_text_batches(parquet, batch_docs),
        desc=f"encode {shard.name}",
        total=n_batches,
        unit="batch",
        disable=not progress,
    )
    appended = appended or {}
    corpus, extra = SplitStats(), {source: SplitStats() for source in appended}
    chunks = [encoded(batches, corpus), *(encoded(b, extra[source]) for source, b in appended.items())]
    # the documents' order: corpus, then each source
    files, tokens = write_shards(itertools.chain(*chunks), shard.parent, shard.stem, max_shard_tokens)
    parts = [corpus, *extra.values()]
    return SplitStats(sum(p.docs for p in parts), sum(p.chars for p in parts), tokens, extra, files)


def roundtrip_failures(
    tokenizer: Tokenizer, parquet: Path, shard: np.ndarray | TokenShards, sep: int, batch_docs: int
) -> tuple[int, int | None]:
    """(how many, index of the first) documents whose shard tokens do not decode back to their text."""
    documents = iter_documents(shard, sep)
    failures, first, index = 0, None, 0
    for texts in iter_text_batches(parquet, batch_docs):
        decoded = tokenizer.decode_batch([next(documents).tolist() for _ in texts], skip_special_tokens=True)
        for got, want in zip(decoded, texts):
            if got != want:
                failures, first = failures + 1, index if first is None else first
            index += 1
    return failures, first


def load_task_texts(input_dir: str, ref: str, split: str) -> list[str]:
    """The non-empty texts of `<task>.<column>` in ingest's task table for `split`."""
    task, column = ref.split(".")
    frame = load_task_split(Path(input_dir) / "tasks", task, split, (column,))
    return [t for t in frame[column].tolist() if t]


def task_table(input_dir: str, ref: str, split: str) -> Path:
    """ingest's task table for `split` that holds `<task>.<column>` (checked from its schema alone)."""
    task, column = ref.split(".")
    path = Path(input_dir) / "tasks" / task / f"{split}.parquet"
    if not path.is_file():
        raise PipelineError(f"{path}: task split not found (is the {task!r} task enabled in params/ingest.yaml?)")
    if column not in (names := pq.read_schema(path).names):
        raise PipelineError(f"{path}: no {column!r} column for {ref} (columns: {names})")
    return path


def iter_task_text_batches(path: Path, ref: str, batch_docs: int) -> Iterator[list[str]]:
    """The non-empty texts of `<task>.<column>` in the task table at `path`, in batches (streamed)."""
    for texts in iter_text_batches(path, batch_docs, ref.split(".")[1]):
        if texts := [t for t in texts if t]:
            yield texts


def check_task_deps(
    input_dir: str, refs: list[str], dvc_file: Path = Path("dvc.yaml"), option: str = "task_texts"
) -> None:
    """Refuse task texts (`option`: task_texts or shard_task_texts) whose task folder dvc.yaml's
    tokenize stage does not depend on: DVC would not rebuild the tokenizer when that task changes.
    (The stage depends on the task folders it reads, not all of tasks/, so a new local task does
    not retrain every tokenizer and then every model.) Without a dvc.yaml here (a direct CLI
    run) there is nothing to check."""
    if not refs or not dvc_file.is_file():
        return
    import yaml

    stage = (yaml.safe_load(dvc_file.read_text()) or {}).get("stages", {}).get("tokenize", {})
    deps = [str(d).replace("${input_dir}", input_dir).rstrip("/") for d in stage.get("do", stage).get("deps", [])]
    for ref in refs:
        folder = f"{input_dir.rstrip('/')}/tasks/{ref.split('.')[0]}"
        if not any(folder == dep or folder.startswith(f"{dep}/") for dep in deps):
            raise PipelineError(
                f"{dvc_file}: the tokenize stage reads {folder} ({option} {ref}) but does not list it in its "
                f"deps, so DVC would not retrain on a change there; add `- ${{input_dir}}/tasks/{ref.split('.')[0]}`"
            )


def corpus_paths(input_dir: str) -> dict[str, Path]:
    paths = {split: Path(input_dir) / "corpus" / f"{split}.parquet" for split in SPLITS}
    for split, path in paths.items():
        if not path.is_file():
            raise PipelineError(f"{path}: missing {split} split (run the ingest stage first)")
    return paths


def build_tokenizer(
    name: str,
    spec: TokenizerSpec,
    cfg: TokenizeConfig,
    paths: dict[str, Path],
    upstream: dict[str, Any],
    tracker: Tracker,
) -> dict[str, float]:
    """Train one tokenizer, write its folder atomically, return its metrics."""
    train_docs = pq.ParquetFile(paths["train"]).metadata.num_rows
    check_task_deps(cfg.input_dir, spec.task_texts)
    check_task_deps(cfg.input_dir, spec.shard_task_texts, option="shard_task_texts")
    # checked before training, read (streamed) when the train shard is written
    shard_tables = {ref: task_table(cfg.input_dir, ref, "train") for ref in spec.shard_task_texts}
    extra = [load_task_texts(cfg.input_dir, ref, "train") for ref in spec.task_texts]
    log.info(
        "training %s tokenizer %r (vocab %d) on %d train documents%s",
        spec.kind,
        name,
        spec.vocab_size,
        train_docs,
        "".join(f" + {len(t)} train {ref}" for ref, t in zip(spec.task_texts, extra, strict=True)),
    )

    def read_texts() -> Iterator[str]:
        return itertools.chain(
            (t for batch in iter_text_batches(paths["train"], cfg.encode_batch_docs) for t in batch), *extra
        )

    tokenizer = train_tokenizer(spec, read_texts, length=train_docs + sum(map(len, extra)), progress=cfg.progress)
    vocab_size = tokenizer.get_vocab_size()
    dtype, sep = token_dtype(vocab_size), token_id(tokenizer, separator_token(spec))

    out = Path(cfg.output_dir) / name
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        tokenizer.save(str(tmp / "tokenizer.json"))
        tokenizer_sha = sha256_file(tmp / "tokenizer.json")
        # the train shard only: val/test stay the corpus's, so pretraining val metrics stay comparable
        appended = {ref: iter_task_text_batches(path, ref, cfg.encode_batch_docs) for ref, path in shard_tables.items()}
        stats = {
            split: encode_split(
                tokenizer,
                path,
                tmp / f"{split}.bin",
                sep,
                dtype,
                cfg.encode_batch_docs,
                cfg.progress,
                appended if split == "train" else None,
                cfg.max_shard_tokens,
            )
            for split, path in paths.items()
        }
        for ref, added in stats["train"].appended.items():
            log.info("%s train shard: appended %d %s documents (%d tokens)", name, added.docs, ref, added.tokens)
        test_shards = TokenShards([tmp / f for f in stats["test"].files], dtype)
        failures, first = roundtrip_failures(tokenizer, paths["test"], test_shards, sep, cfg.encode_batch_docs)
        if failures and spec.kind in LOSSLESS_KINDS:
            raise PipelineError(
                f"{paths['test']}: record {first} (and {failures - 1} more) does not decode "
                f"back to its text with the byte-level tokenizer {name!r}"
            )
        manifest = build_manifest(
            "tokenize",
            inputs=describe_inputs([*paths.values(), *shard_tables.values()]),
            outputs={split: st.files[0] if len(st.files) == 1 else st.files for split, st in stats.items()}
            | {"tokenizer": "tokenizer.json"},
            counts={
                "tokens": {s: st.tokens for s, st in stats.items()},
                "docs": {s: st.docs for s, st in stats.items()},
                # train's shard_task_texts documents, included in its tokens and docs above
                "appended": {ref: {"docs": a.docs, "tokens": a.tokens} for ref, a in stats["train"].appended.items()},
            },
            extra={
                "name": name,
                "tokenizer_sha256": tokenizer_sha,
                "tokenizer_kind": spec.kind,
                "spec": spec.model_dump(),
                "vocab_size": vocab_size,
                "dtype": dtype.name,
                "eot_id": sep,
                "special_tokens": special_tokens(spec),
                "extra_ids": getattr(spec, "extra_ids", 0),
                "tokens": {s: st.tokens for s, st in stats.items()},
                # sharded splits only (max_shard_tokens), so an unsharded manifest reads as before
                **({"shards": {s: st.files for s, st in stats.items()}} if cfg.max_shard_tokens else {}),
            },
        )
        write_json(tmp / MANIFEST_NAME, manifest)
    write_run_record(out, mlflow_run_id=tracker.run_id, upstream_run_id=upstream.get("mlflow_run_id"))
    tracker.set_tags({f"tokenizer_sha256.{name}": tokenizer_sha})
    return {
        "vocab_size": vocab_size,
        **{f"tokens/{split}": st.tokens for split, st in stats.items()},
        **{f"train/appended_tokens/{ref}": a.tokens for ref, a in stats["train"].appended.items()},
        # characters per token on val: how well the tokenizer compresses unseen text
        "val/chars_per_token": stats["val"].chars / max(stats["val"].tokens - stats["val"].docs, 1),
        # decode(encode(text)) != text on test documents; 0 by construction for byte-level BPE
        "test/roundtrip_failures": failures,
        # share of <unk> tokens in the test split of each task text it learnt from (near 0 = covered)
        **{
            f"test/unk_rate/{ref}": unk_rate(tokenizer, load_task_texts(cfg.input_dir, ref, "test"))
            for ref in spec.task_texts
        },
    }


def run(cfg: TokenizeConfig, tracker: Tracker) -> StageResult:
    paths = corpus_paths(cfg.input_dir)
    upstream = read_run_record(cfg.input_dir)  # which ingest run made the corpus (lineage)
    names = [cfg.item] if cfg.item else list(cfg.tokenizers)  # no item: every tokenizer
    metrics: dict[str, float] = {}
    for name in names:
        built = build_tokenizer(name, cfg.tokenizers[name], cfg, paths, upstream, tracker)
        metrics |= {f"{name}/{key}": value for key, value in built.items()}
    tracker.set_tags({"upstream.ingest": str(upstream.get("mlflow_run_id"))})
    out = Path(cfg.output_dir)
    report = {name: read_manifest(out / name)["tokenizer_sha256"] for name in names}
    return StageResult(
        metrics=metrics,
        report={"tokenizer_sha256": report},
        artifacts=[out / name / f for name in names for f in ("tokenizer.json", MANIFEST_NAME)],
    )
