"""The three trainable tokenizer kinds (HF `tokenizers`), each with its model family's special tokens.

- bpe:       byte-level BPE (GPT). Never meets an unknown character: decode(encode(text)) == text.
- wordpiece: BERT. Bert normalizer + pre-tokenizer; [CLS] A [SEP] (B [SEP]) with token_type_ids.
- unigram:   T5 / SentencePiece style. Metaspace pre-tokenizer, sentinels <extra_id_i>, appends </s>.

A tokenizer's identity downstream is the sha256 of its `tokenizer.json`, so equal inputs must
give equal bytes: `canonical_ids` renumbers what the trainers leave in hash order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from llm_pipeline.config import StageConfig
from llm_pipeline.errors import PipelineError

EOT = "<|endoftext|>"
BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
T5_SPECIALS = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}  # this order gives T5's ids 0, 1, 2
_KindTrainer = trainers.BpeTrainer | trainers.WordPieceTrainer | trainers.UnigramTrainer


def _task_column(ref: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_]+", ref):
        raise ValueError(f"{ref!r} is not <task>.<column> (e.g. translation.target)")
    return ref


def _unique(refs: list[str]) -> list[str]:
    if len(set(refs)) < len(refs):
        raise ValueError("a task text is listed twice")
    return refs


TaskRefs = Annotated[list[Annotated[str, AfterValidator(_task_column)]], AfterValidator(_unique)]


class _Spec(StageConfig):
    # Task texts the tokenizer also learns from (train split only; in no shard unless also in
    # shard_task_texts), e.g. ["translation.target"] so the T5 tokenizer covers German, French
    # and Italian.
    task_texts: TaskRefs = Field(default_factory=list)
    # Task texts appended to the train shard after the corpus, one document each (train split
    # only; val/test shards stay the corpus's), e.g. ["translation.target"] so T5 pretrains on
    # the languages it will write.
    shard_task_texts: TaskRefs = Field(default_factory=list)


class BpeSpec(_Spec):
    kind: Literal["bpe"]
    vocab_size: int = Field(8192, ge=258)  # incl. the 256 byte tokens and EOT
    min_frequency: int = Field(2, ge=1)  # a pair must occur this often to be merged


class WordPieceSpec(_Spec):
    kind: Literal["wordpiece"]
    vocab_size: int = Field(8192, ge=100)
    min_frequency: int = Field(2, ge=1)
    lowercase: bool = True  # bert-base-uncased style


class UnigramSpec(_Spec):
    kind: Literal["unigram"]
    vocab_size: int = Field(8192, ge=100)
    extra_ids: int = Field(100, ge=0)  # T5 span-corruption sentinels <extra_id_0..N-1>
    max_piece_length: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _room_for_pieces(self) -> UnigramSpec:
        if self.vocab_size <= len(T5_SPECIALS) + self.extra_ids:
            raise ValueError(
                f"vocab_size {self.vocab_size} leaves no room for pieces after "
                f"{len(T5_SPECIALS)} special tokens and {self.extra_ids} extra_ids"
            )
        return self


TokenizerSpec = Annotated[BpeSpec | WordPieceSpec | UnigramSpec, Field(discriminator="kind")]


def special_tokens(spec: TokenizerSpec) -> dict[str, str]:
    """Role -> token for the manifest (sentinels are counted by `extra_ids`, not listed)."""
    return {"bpe": {"eot": EOT}, "wordpiece": BERT_SPECIALS, "unigram": T5_SPECIALS}[spec.kind]


def separator_token(spec: TokenizerSpec) -> str:
    """The token that follows every document in a shard."""
    return {"bpe": EOT, "wordpiece": "[SEP]", "unigram": "</s>"}[spec.kind]


def sentinels(n: int) -> list[str]:
    return [f"<extra_id_{i}>" for i in range(n)]


def _bpe(spec: BpeSpec, read_texts: Callable[[], Iterable[str]]) -> tuple[Tokenizer, _KindTrainer]:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    return tokenizer, trainer


WORDPIECE_PREFIX = "##"


def _wordpiece(spec: WordPieceSpec, read_texts: Callable[[], Iterable[str]]) -> tuple[Tokenizer, _KindTrainer]:
    tokenizer = Tokenizer(models.WordPiece(unk_token=BERT_SPECIALS["unk"]))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=spec.lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix=WORDPIECE_PREFIX)
    trainer = trainers.WordPieceTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        # The trainer numbers each `##c` when it first meets it, walking its word counts in
        # hash order (seeded anew in every process), and breaks ties between equally frequent
        # merges by those numbers: two trainings on the same text learnt other vocabularies
        # (seen). Declared up front, in character order, they get fixed ids; they are special
        # to the trainer only (canonical_form removes them from the added tokens).
        special_tokens=[*BERT_SPECIALS.values(), *continuation_symbols(tokenizer, read_texts())],
        continuing_subword_prefix=WORDPIECE_PREFIX,
    )
    return tokenizer, trainer


def continuation_symbols(tokenizer: Tokenizer, texts: Iterable[str]) -> list[str]:
    """`##c` for every character c that follows another inside a word, as the trainer sees
    words (normalized, pre-tokenized): the symbols it would create itself, in character order."""
    assert tokenizer.normalizer is not None and tokenizer.pre_tokenizer is not None
    chars: set[str] = set()
    for text in texts:
        for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text)):
            chars.update(word[1:])
    return [WORDPIECE_PREFIX + c for c in sorted(chars)]


def _unigram(spec: UnigramSpec, read_texts: Callable[[], Iterable[str]]) -> tuple[Tokenizer, _KindTrainer]:
    tokenizer = Tokenizer(models.Unigram())
    # what HF's T5 converter does: SentencePiece's nmt_nfkc, runs of spaces collapsed
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Nmt(), normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=[*T5_SPECIALS.values(), *sentinels(spec.extra_ids)],
        unk_token=T5_SPECIALS["unk"],
        max_piece_length=spec.max_piece_length,
    )
    return tokenizer, trainer


def _post_processor(spec: TokenizerSpec, tokenizer: Tokenizer) -> processors.PostProcessor | None:
    """What `add_special_tokens=True` adds; needs the trained ids, so it is set after training."""
    if spec.kind == "wordpiece":
        cls, sep = BERT_SPECIALS["cls"], BERT_SPECIALS["sep"]
        return processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
        )
    if spec.kind == "unigram":
        eos = T5_SPECIALS["eos"]
        return processors.TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, tokenizer.token_to_id(eos))]
        )
    return None


# each builder takes its own kind of spec, hence Any
BUILDERS: dict[str, Callable[[Any, Callable[[], Iterable[str]]], tuple[Tokenizer, _KindTrainer]]] = {
    "bpe": _bpe,
    "wordpiece": _wordpiece,
    "unigram": _unigram,
}


def train_tokenizer(
    spec: TokenizerSpec, read_texts: Callable[[], Iterable[str]], length: int | None = None, progress: bool = False
) -> Tokenizer:
    """Train a tokenizer of `spec.kind` on the texts `read_texts()` yields (streamed; only word
    counts are held). WordPiece reads them twice: once for its symbols, once to train."""
    tokenizer, trainer = BUILDERS[spec.kind](spec, read_texts)
    trainer.show_progress = progress
    tokenizer.train_from_iterator(read_texts(), trainer=trainer, length=length)
    tokenizer = canonical_form(tokenizer)
    post = _post_processor(spec, tokenizer)
    if post is not None:
        tokenizer.post_processor = post
    return tokenizer


# Unigram scores kept to this many decimals: the trainer's sums run in hash order, so a rerun's
# scores differ by ~1e-14 (a few ulps; 290-895 of 1024 pieces seen), which moves near-tied pieces
# to other ids. Rounded, a score lands on another value only if that noise straddles a 1e-6 step.
UNIGRAM_SCORE_DECIMALS = 6
UNIGRAM_UNCOVERED_STEP = 1e-4  # the trainer's min_score_penalty_delta (tokenizers' unigram/trainer.rs)


def canonical_form(tokenizer: Tokenizer) -> Tokenizer:
    """The trained tokenizer as bytes that depend on the training text alone.

    Rust's hash maps are seeded anew in every process. WordPiece: its `##c` symbols were
    declared special to the trainer (their ids fixed, see _wordpiece); here they become plain
    vocabulary again, since as added tokens a literal `##c` in a text would match before the
    model. Unigram: scores wobble in their last digits and the characters no piece covers get
    their scores (1e-4 apart, from the lowest up) in hash order; rounded, handed out in
    character order, and the pieces sorted by (score, piece). Special tokens keep their ids (they lead the
    vocabulary); byte-level BPE is already deterministic and is left as it is.
    """
    data = json.loads(tokenizer.to_str())
    model = data["model"]
    if model["type"] == "WordPiece":
        data["added_tokens"] = [t for t in data["added_tokens"] if not t["content"].startswith(WORDPIECE_PREFIX)]
    elif model["type"] == "Unigram":
        pieces = model["vocab"]  # [[piece, log-prob], ...], best first
        n = _leading(pieces, {token["content"] for token in data["added_tokens"]})
        body = [[piece, round(score, UNIGRAM_SCORE_DECIMALS)] for piece, score in pieces[n:]]
        if body:
            # The characters no piece covers were given min_score + k * 1e-4, k = 0, 1, ... in
            # hash order: the single characters on that lattice get its scores in character order.
            floor = min(score for _, score in body)
            steps = [(entry, (entry[1] - floor) / UNIGRAM_UNCOVERED_STEP) for entry in body if len(entry[0]) == 1]
            uncovered = [entry for entry, k in steps if abs(k - round(k)) < 0.05 and round(k) < len(steps)]
            scores = sorted((entry[1] for entry in uncovered), reverse=True)
            for entry, score in zip(sorted(uncovered), scores, strict=True):
                entry[1] = score
        body.sort(key=lambda entry: (-entry[1], entry[0]))
        model["vocab"] = pieces[:n] + body
    else:
        return tokenizer
    return Tokenizer.from_str(json.dumps(data))


def _leading(entries: list, specials: set[str]) -> int:
    """How many entries at the start are special tokens (the trainers put them first)."""
    n = 0
    while n < len(entries) and entries[n][0] in specials:
        n += 1
    return n


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: tokenizer not found (run the tokenize stage first)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise PipelineError(f"{path}: not a valid tokenizer file: {exc}") from None


def token_id(tokenizer: Tokenizer, token: str) -> int:
    found = tokenizer.token_to_id(token)
    if found is None:
        raise PipelineError(f"tokenizer has no {token!r} token")
    return found


def eot_id(tokenizer: Tokenizer) -> int:
    """The GPT end-of-text id (byte-level BPE tokenizers)."""
    return token_id(tokenizer, EOT)


# per tokenizer kind, the token that pads a batch and the one that ends a text (the first
# the tokenizer has wins): fine-tuning and decoding ask by role, not by family
PAD_TOKENS = (BERT_SPECIALS["pad"], T5_SPECIALS["pad"], EOT)
END_TOKENS = (T5_SPECIALS["eos"], EOT, BERT_SPECIALS["sep"])


def _first_known(tokenizer: Tokenizer, tokens: tuple[str, ...], role: str) -> int:
    for token in tokens:
        found = tokenizer.token_to_id(token)
        if found is not None:
            return found
    raise PipelineError(f"tokenizer has no {role} token (looked for {', '.join(tokens)})")


def pad_id(tokenizer: Tokenizer) -> int:
    return _first_known(tokenizer, PAD_TOKENS, "padding")


def end_id(tokenizer: Tokenizer) -> int:
    """The token that ends a text: </s> (unigram), <|endoftext|> (bpe), [SEP] (wordpiece)."""
    return _first_known(tokenizer, END_TOKENS, "end-of-text")


def unk_rate(tokenizer: Tokenizer, texts: list[str]) -> float:
    """Share of tokens that are the unknown token: how much of `texts` the vocabulary misses."""
    unk = next(
        (
            tokenizer.token_to_id(t)
            for t in (T5_SPECIALS["unk"], BERT_SPECIALS["unk"])
            if tokenizer.token_to_id(t) is not None
        ),
        None,
    )
    if unk is None:
        return 0.0  # byte-level: every text is covered
    ids = [i for e in tokenizer.encode_batch(texts, add_special_tokens=False) for i in e.ids]
    return sum(1 for i in ids if i == unk) / max(len(ids), 1)
