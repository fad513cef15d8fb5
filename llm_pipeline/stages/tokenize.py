"""tokenize: train a byte-level BPE on the train split, encode every split into a shard.

Inputs : data/ingest/corpus/{train,val,test}.parquet (+ its manifest)
Outputs: data/tokenize/tokenizer.json, {train,val,test}.bin, manifest.json
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from llm_pipeline.config import StageConfig
from llm_pipeline.data.shards import encode_batches_to_shard, token_dtype
from llm_pipeline.data.tokenizer import eot_id, train_byte_bpe
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import (MANIFEST_NAME, atomic_path, build_manifest, describe_inputs,
                             read_manifest, sha256_file, write_json)
from llm_pipeline.stages.base import StageResult

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class TokenizeConfig(StageConfig):
    input_dir: str = "data/ingest"        # ingest's output folder
    output_dir: str = "data/tokenize"
    vocab_size: int = 8192                # BPE merges stop here (incl. 256 bytes + EOT)
    min_frequency: int = 2                # a pair must occur this often to be merged
    encode_batch_docs: int = 1000         # documents per encode_batch call (bounds memory)
    progress: bool = True


def iter_text_batches(path: Path, batch_docs: int) -> Iterator[list[str]]:
    """Stream the `text` column of a parquet file in batches of documents."""
    parquet = pq.ParquetFile(path)
    if "text" not in parquet.schema_arrow.names:
        raise PipelineError(f"{path}: no 'text' column (columns: {parquet.schema_arrow.names})")
    for batch in parquet.iter_batches(batch_size=batch_docs, columns=["text"]):
        yield batch.column("text").to_pylist()


def run(cfg: TokenizeConfig, tracker) -> StageResult:
    corpus_dir = Path(cfg.input_dir) / "corpus"
    ingest_manifest = read_manifest(cfg.input_dir)
    paths = {split: corpus_dir / f"{split}.parquet" for split in SPLITS}
    for split, path in paths.items():
        if not path.is_file():
            raise PipelineError(f"{path}: missing {split} split (run the ingest stage first)")
    train_docs = pq.ParquetFile(paths["train"]).metadata.num_rows

    log.info("training byte-level BPE (vocab %d) on %d train documents", cfg.vocab_size, train_docs)
    texts = (t for batch in iter_text_batches(paths["train"], cfg.encode_batch_docs) for t in batch)
    tokenizer = train_byte_bpe(texts, cfg.vocab_size, cfg.min_frequency, length=train_docs)
    vocab_size = tokenizer.get_vocab_size()
    dtype, eot = token_dtype(vocab_size), eot_id(tokenizer)

    out = Path(cfg.output_dir)
    tokens: dict[str, int] = {}
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        tokenizer.save(str(tmp / "tokenizer.json"))
        tokenizer_sha = sha256_file(tmp / "tokenizer.json")
        for split, path in paths.items():
            n_docs = pq.ParquetFile(path).metadata.num_rows
            batches = tqdm(iter_text_batches(path, cfg.encode_batch_docs), desc=f"encode {split}",
                           total=-(-n_docs // cfg.encode_batch_docs), unit="batch",
                           disable=not cfg.progress)
            tokens[split] = encode_batches_to_shard(tokenizer, batches, tmp / f"{split}.bin", dtype, eot)
        manifest = build_manifest(
            "tokenize",
            inputs=describe_inputs(list(paths.values())),
            outputs={split: f"{split}.bin" for split in SPLITS} | {"tokenizer": "tokenizer.json"},
            counts={"tokens": tokens},
            extra={"tokenizer_sha256": tokenizer_sha, "tokenizer_kind": "byte_bpe",
                   "vocab_size": vocab_size, "dtype": dtype.name, "eot_id": eot,
                   "upstream_run_id": ingest_manifest.get("mlflow_run_id"),
                   "mlflow_run_id": tracker.run_id},
        )
        write_json(tmp / MANIFEST_NAME, manifest)
    tracker.set_tags({"tokenizer_sha256": tokenizer_sha, "upstream.ingest": str(manifest["upstream_run_id"])})

    chars = sum(len(t) for batch in iter_text_batches(paths["val"], cfg.encode_batch_docs) for t in batch)
    metrics = {
        "vocab_size": vocab_size,
        **{f"tokens/{split}": n for split, n in tokens.items()},
        # characters per token on val: how well the merges compress unseen text
        "val/chars_per_token": chars / max(tokens["val"], 1),
    }
    return StageResult(metrics=metrics, report={"tokenizer_sha256": tokenizer_sha, "dtype": dtype.name},
                       artifacts=[out / "tokenizer.json", out / MANIFEST_NAME])
