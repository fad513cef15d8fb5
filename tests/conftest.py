"""Shared fixtures: telemetry off, MLflow pointed into the test's tmp dir, tiny corpora."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pandas as pd
import pytest

# Under pytest-xdist (`make test`: two workers on two cores) each worker and every process it starts
# computes on one thread: torch's default (a thread per core) in two workers at once oversubscribes
# the cores and OpenMP's spinning threads wait on each other. Measured here: two concurrent runs of
# tests/unit/training/test_bert_nsp_learns.py took 27.5 s each with the default, 8.0 s each with one
# thread. Set before torch is imported (the stage subprocesses inherit it); a plain `pytest` keeps
# torch's default.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# Telemetry off before any of these libraries is imported by a test.
os.environ.update(
    {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
    }
)

WORDS = [
    "the",
    "package",
    "provides",
    "a",
    "library",
    "for",
    "parsing",
    "data",
    "files",
    "and",
    "tools",
    "to",
    "convert",
    "images",
    "audio",
    "video",
    "network",
    "server",
    "client",
    "graphics",
    "game",
    "editor",
    "shell",
    "python",
    "perl",
    "module",
]


def make_documents(n: int, seed: int = 0, min_words: int = 20, max_words: int = 60) -> list[str]:
    """Word chains where each word usually fixes the next (a Markov chain), so a language
    model that uses context beats a unigram model, as on real text."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        index, words = rng.randrange(len(WORDS)), []
        for _ in range(rng.randint(min_words, max_words)):
            words.append(WORDS[index])
            index = (index * 7 + 3) % len(WORDS) if rng.random() < 0.8 else rng.randrange(len(WORDS))
        docs.append(" ".join(words).capitalize() + ".")
    return docs


INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


# tests/integration/conftest.py's flow_world: built by the first module below, needed by the last ones
BUILDS_THE_FLOW_WORLD = ("test_pipeline.py",)
NEEDS_THE_FLOW_WORLD = ("test_pipeline_kills.py", "test_pipeline_changes.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration/ is marked `integration`, whether or not its file says so,
    so `make test-fast` (-m "not integration and not slow") can never pick one up by omission.

    Order (stable otherwise): the module that builds the shared flow world first, the modules that
    only change copies of it last. With xdist's one-file-per-worker scheduling, one worker builds
    the world while the other runs everything else, and neither waits on the build."""
    for item in items:
        if INTEGRATION_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)

    def rank(item: pytest.Item) -> int:
        name = Path(item.path).name
        return 0 if name in BUILDS_THE_FLOW_WORLD else 2 if name in NEEDS_THE_FLOW_WORLD else 1

    items.sort(key=rank)


@pytest.fixture
def tracking_dir(tmp_path, monkeypatch):
    """MLflow sqlite + artifacts under tmp_path, for tests that exercise tracking."""
    return track_into(tmp_path, monkeypatch)


def track_into(root, monkeypatch):
    """Point MLflow (tracking db + artifacts) into `root`; `monkeypatch` undoes it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("LLM_PIPELINE_ARTIFACT_ROOT", str(root / "mlartifacts"))
    monkeypatch.delenv("LLM_PIPELINE_TRACKING", raising=False)
    return root


@pytest.fixture
def fake_ingest_dir(tmp_path):
    """An ingest output folder as the ingest stage writes it, made of synthetic text.

    Classification labels are recoverable from the text (a keyword per label), so a tiny
    model can learn them.
    """
    return write_fake_ingest(tmp_path / "ingest")


def write_fake_ingest(root):
    """The body of `fake_ingest_dir`, for fixtures of a wider scope."""
    (root / "corpus").mkdir(parents=True)
    for split, n in (("train", 300), ("val", 30), ("test", 30)):
        docs = make_documents(n, seed=len(split) * 7 + n)
        pd.DataFrame({"doc_id": [f"{split}{i}" for i in range(n)], "source": "synthetic", "text": docs}).to_parquet(
            root / "corpus" / f"{split}.parquet"
        )
    task = root / "tasks" / "classification"
    task.mkdir(parents=True)
    rng = random.Random(1)
    for split, n in (("train", 120), ("val", 24), ("test", 24)):
        labels = [rng.choice(["games", "net", "sound"]) for _ in range(n)]
        texts = [f"{label} {doc}" for label, doc in zip(labels, make_documents(n, seed=n))]
        pd.DataFrame({"text": texts, "label": labels, "group": [f"g{i}" for i in range(n)]}).to_parquet(
            task / f"{split}.parquet"
        )
    nsp = root / "tasks" / "nsp"
    nsp.mkdir(parents=True)
    for split, n in (("train", 64), ("val", 16), ("test", 16)):
        docs = make_documents(2 * n, seed=n + 1, min_words=8, max_words=16)
        pd.DataFrame(
            {
                "text_a": docs[:n],
                "text_b": docs[n:],
                "is_next": [i % 2 for i in range(n)],
                "group": [f"d{i}" for i in range(n)],
            }
        ).to_parquet(nsp / f"{split}.parquet")
    # seq2seq: the target is the input's first three words (learnable), with a column the
    # template can read, as translation's `lang`
    echo = root / "tasks" / "echo"
    echo.mkdir(parents=True)
    for split, n in (("train", 96), ("val", 16), ("test", 16)):
        docs = make_documents(n, seed=n + 2, min_words=6, max_words=12)
        pd.DataFrame(
            {
                "input": docs,
                "target": [" ".join(d.split()[:3]) for d in docs],
                "lang": [("de", "fr")[i % 2] for i in range(n)],
                "group": [f"e{i}" for i in range(n)],
            }
        ).to_parquet(echo / f"{split}.parquet")
    # generation: held-out documents cut into prompt -> real continuation; no train rows
    generation = root / "tasks" / "generation"
    generation.mkdir(parents=True)
    for split, n in (("train", 0), ("val", 8), ("test", 8)):
        docs = make_documents(n, seed=n + 3)
        words = [d.split() for d in docs]
        pd.DataFrame(
            {
                "prompt": [" ".join(w[:8]) for w in words],
                "continuation": [" " + " ".join(w[8:]) for w in words],
                "group": [f"p{i}" for i in range(n)],
            },
            columns=["prompt", "continuation", "group"],
        ).astype(str).to_parquet(generation / f"{split}.parquet")
    (root / "manifest.json").write_text('{"stage": "ingest", "mlflow_run_id": null}')
    return root


@pytest.fixture(scope="session")
def prefect_harness():
    """A throwaway Prefect API for flow tests (10-15 s once per session)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


def write_fake_bpe_shards(root: Path) -> Path:
    """A fake ingest output (root/ingest, returned) and its bpe tokenizer + shards (root/tok/bpe,
    vocab 300): what the tiny pretraining workspaces of the fault tests start from."""
    from llm_pipeline.stages import tokenize
    from llm_pipeline.tracking.runs import NullTracker

    ingest = write_fake_ingest(root / "ingest")
    tokenize.run(
        tokenize.TokenizeConfig(
            input_dir=str(ingest),
            output_dir=str(root / "tok"),
            progress=False,
            tokenizers={"bpe": {"kind": "bpe", "vocab_size": 300}},
        ),
        NullTracker(),
    )
    return ingest
