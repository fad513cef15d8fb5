"""Train, save and load the byte-level BPE tokenizer (HF `tokenizers`).

Byte-level BPE never meets an unknown character, so decode(encode(text)) == text.
The tokenizer's identity downstream is the sha256 of its `tokenizer.json`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llm_pipeline.errors import PipelineError

EOT = "<|endoftext|>"


def train_byte_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
                   length: int | None = None) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=True,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: tokenizer not found (run the tokenize stage first)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise PipelineError(f"{path}: not a valid tokenizer file: {exc}") from None


def eot_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(EOT)
    if token_id is None:
        raise PipelineError(f"tokenizer has no {EOT!r} token")
    return token_id
