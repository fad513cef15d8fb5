"""Fuzzed input for the task builders: random descriptions, documents, WordNet lines, DDTP
stanzas and users' task files. Properties: only PipelineError escapes; every example has a
non-empty input and target; the counts add up: examples kept + skipped (as each builder
counts them, or as its rule says, counted here from what went in) = records in.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from llm_pipeline.data.records import Document
from llm_pipeline.data.sources.debian import DebianDescription
from llm_pipeline.data.tasks.classification import ClassificationConfig, build_classification_task
from llm_pipeline.data.tasks.generation import GenerationTaskConfig, build_generation_task
from llm_pipeline.data.tasks.local import LocalTaskConfig, build_local_task
from llm_pipeline.data.tasks.nsp import NSPConfig, build_nsp_task
from llm_pipeline.data.tasks.qa import QAConfig, build_qa_from_dir
from llm_pipeline.data.tasks.summarization import SummarizationConfig, build_summarization_task
from llm_pipeline.data.tasks.translation import read_translations, translation_pairs
from llm_pipeline.errors import PipelineError

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SPLITS = ("train", "val", "test")


@dataclass
class Split:
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: str = "fuzz"


words = st.text(alphabet=st.sampled_from(list("ab. C\n\t<>/\x01\u200b!?é")), max_size=60)
texts = st.one_of(words, st.text(max_size=40), st.sampled_from(["", " ", "<b></b>", "\x01", "\u200b", "a <p> b"]))


@st.composite
def descriptions(draw: st.DrawFn) -> dict[str, list[DebianDescription]]:
    out: dict[str, list[DebianDescription]] = {s: [] for s in SPLITS}
    for i in range(draw(st.integers(0, 12))):
        d = DebianDescription(
            md5=f"md5-{i}",
            package=f"pkg{i}",
            source=draw(st.sampled_from(["src-a", "src-b", f"src{i}"])),
            section=draw(st.sampled_from(["utils", "libs", "net", "x11", "doc"])),
            synopsis=draw(texts),
            long_description=draw(texts.filter(str.strip)),  # debian.read_descriptions drops empty ones
        )
        out[draw(st.sampled_from(SPLITS))].append(d)
    return out


def rows(task) -> list[dict]:
    return [r for s in SPLITS for r in task.splits[s]]


@FUZZ
@given(by_split=descriptions(), top_n=st.integers(2, 4), min_chars=st.integers(0, 30))
def test_classification(by_split: dict[str, list[DebianDescription]], top_n: int, min_chars: int) -> None:
    task = build_classification_task(ClassificationConfig(top_n_sections=top_n, min_chars=min_chars), by_split, "s")
    long_enough = [d for s in SPLITS for d in by_split[s] if len(d.long_description) >= min_chars]
    counts = Counter(d.section for d in long_enough)
    labels = sorted(counts, key=lambda label: (-counts[label], label))[:top_n]
    kept = rows(task)
    # kept + too short + outside the top_n labels = descriptions in
    assert len(kept) == sum(d.section in labels for d in long_enough)
    assert {r["label"] for r in kept} <= set(labels)
    for split in SPLITS:  # each example stays in its description's split
        assert Counter((r["text"], r["label"]) for r in task.splits[split]) <= Counter(
            (d.long_description, d.section) for d in by_split[split]
        )


@FUZZ
@given(by_split=descriptions(), min_chars=st.integers(0, 30))
@example(
    by_split={
        "train": [DebianDescription("m", "p", "s", "utils", "<b></b>", "a long enough text")],
        "val": [],
        "test": [],
    },
    min_chars=0,
)
def test_summarization(by_split: dict[str, list[DebianDescription]], min_chars: int) -> None:
    task = build_summarization_task(SummarizationConfig(min_input_chars=min_chars), by_split, "s")
    kept = rows(task)
    assert all(r["input"].strip() and r["target"].strip() for r in kept), kept
    eligible = [d for s in SPLITS for d in by_split[s] if len(d.long_description) >= min_chars]
    assert len(kept) <= len(eligible)


ddtp_line = st.one_of(
    st.sampled_from(["Package: p\n", "Description-md5: md5-1\n", "Description-md5: md5-2\n", "\n", " .\n"]),
    st.builds(lambda t: f"Description-de: {t}\n", texts),
    st.builds(lambda t: f" {t}\n", texts),
    st.text(max_size=20).map(lambda t: t + "\n"),
)


@FUZZ
@given(lines=st.lists(ddtp_line, max_size=12), synopsis=texts, long_text=texts, paragraphs=st.booleans())
def test_translation(lines: list[str], synopsis: str, long_text: str, paragraphs: bool) -> None:
    table = read_translations([io.StringIO("".join(lines))], "de")
    assert set(table) <= {line.split(":", 1)[1].strip() for line in lines if line.startswith("Description-md5:")}
    d = DebianDescription("md5-1", "p", "s", "utils", synopsis, long_text)
    for translated in table.values():
        pairs = translation_pairs(d, translated, "de", paragraphs)
        assert all(p["input"] and p["target"] and p["lang"] == "de" for p in pairs), pairs
        assert len(pairs) <= 1 + (len(long_text.split("\n\n")) if paragraphs else 0)


wordnet_line = st.one_of(
    st.builds(
        lambda lemma, gloss, n: f"00001740 03 n {n:02x} {lemma} 0 000 | {gloss}\n",
        st.text(alphabet="abc_()", min_size=1, max_size=6),
        texts.map(lambda t: t.replace("\n", " ")),
        st.integers(0, 3),
    ),
    st.just("  1 This software and database is being provided\n"),
    st.text(max_size=30).map(lambda t: t.replace("\n", " ") + "\n"),
    st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"").decode("latin-1") + "\n"),
)


@FUZZ
@given(lines=st.lists(wordnet_line, max_size=8))
@example(lines=["00001740 03 n zz a 0 000 | gloss\n"])
def test_qa(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data.noun").write_text("".join(lines), encoding="utf-8", errors="surrogateescape")
        try:
            task = build_qa_from_dir(QAConfig(parts_of_speech=["noun"]), Path(tmp), Split())
        except PipelineError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(f"{tmp}/data.noun:")  # noqa: PT017
            event("refused")
            return
        event("built")
        kept = rows(task)
        assert len(kept) == task.notes["senses_read"]  # no cap: every unique sense is an example
        assert all(r["input"] and r["target"] for r in kept)


def corpus_docs(draw: st.DrawFn) -> dict[str, list[Document]]:
    docs = draw(
        st.lists(
            st.tuples(st.sampled_from(["debian", "bible_web", "local:x"]), words, st.sampled_from(SPLITS)), max_size=8
        )
    )
    return {s: [Document(src, f"loc{i}", t) for i, (src, t, split) in enumerate(docs) if split == s] for s in SPLITS}


@FUZZ
@given(data=st.data(), min_chars=st.integers(1, 20), negatives=st.sampled_from(["same_source", "any_document"]))
def test_nsp(data: st.DataObject, min_chars: int, negatives: str) -> None:
    corpus = data.draw(st.composite(corpus_docs)())
    task = build_nsp_task(NSPConfig(min_segment_chars=min_chars, negatives=negatives), corpus, "s")
    for split in SPLITS:
        pairs = task.splits[split]
        assert all(r["text_a"] and r["text_b"] and r["is_next"] in (0, 1) for r in pairs)
        nexts = [r for r in pairs if r["is_next"] == 1]
        # segments come out whitespace-normalised ("<\\n<" -> "< <", found by this test in CI)
        flat = lambda text: " ".join(text.split())
        texts_of = {flat(d.text) for d in corpus[split]}
        assert all(any(flat(r["text_a"]) in t and flat(r["text_b"]) in t for t in texts_of) for r in nexts)


@FUZZ
@given(data=st.data(), prompt=st.integers(1, 4), cont=st.integers(1, 6), min_cont=st.integers(1, 4))
def test_generation(data: st.DataObject, prompt: int, cont: int, min_cont: int) -> None:
    corpus = data.draw(st.composite(corpus_docs)())
    cfg = GenerationTaskConfig(prompt_words=prompt, continuation_words=cont, min_continuation_words=min_cont)
    task = build_generation_task(cfg, corpus, "s")
    assert task.splits["train"] == []
    for split in ("val", "test"):
        long_enough = [d for d in corpus[split] if len(d.text.split()) >= prompt + min_cont]
        assert len(task.splits[split]) == len(long_enough)  # kept + too short = documents in
        for r in task.splits[split]:
            assert len(r["prompt"].split()) == prompt and 1 <= len(r["continuation"].split()) <= cont


good_task_line = st.one_of(
    st.builds(lambda i, t: json.dumps({"input": i, "target": t}), texts, texts),
    st.builds(lambda i, t, g: json.dumps({"input": i, "target": t, "g": g}), texts, texts, st.text(max_size=3)),
)
bad_task_line = st.one_of(
    st.builds(lambda i: json.dumps({"input": i}), texts),
    st.builds(lambda v: json.dumps({"input": "x", "target": v}), st.one_of(st.integers(), st.none(), st.just([]))),
    st.sampled_from(["{", "[]", '{"input": "\\ud800", "target": "t"}']),
)


@st.composite
def task_lines(draw: st.DrawFn) -> list[str]:
    """Good records, maybe a blank line, and at most one bad record (so that half the files build)."""
    lines = draw(st.lists(good_task_line, max_size=8))
    for extra in (st.just(""), bad_task_line):
        if draw(st.booleans()):
            lines.insert(draw(st.integers(0, len(lines))), draw(extra))
    return lines


@FUZZ
@given(lines=task_lines(), group=st.sampled_from([None, "g"]))
def test_local_task(lines: list[str], group: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cfg = LocalTaskConfig(name="t", kind="seq2seq", path=str(path), format="jsonl", group_field=group)
        try:
            task, _ = build_local_task(cfg, Split())
        except PipelineError as exc:
            message = str(exc)
            assert "\n" not in message and (message.startswith(f"{path}") or message.startswith("tasks.local"))
            event("refused")
            return
        event("built")
        records = sum(bool(line.strip()) for line in lines)  # JSON lines written (blank lines hold none)
        kept = rows(task)
        assert len(kept) + task.notes["skipped_empty"] == records
        assert all(r["input"] and r["target"] for r in kept)
