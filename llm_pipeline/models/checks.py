"""Input checks the models run before any computation, with errors a user can act on."""

from __future__ import annotations

from llm_pipeline.errors import PipelineError


class SequenceTooLongError(PipelineError, ValueError):
    """A sequence longer than the model's position table (a ValueError too, for plain callers)."""


def check_sequence_length(length: int, maximum: int | None, key: str, what: str = "sequence length") -> None:
    """Raise before running when `length` exceeds the model's `maximum` (config field `key`).

    `what` names the length in the message, e.g. "data.seq_len (params/pretrain.yaml)".
    """
    if maximum is not None and length > maximum:
        raise SequenceTooLongError(
            f"{what} {length} exceeds the model's maximum {key}={maximum}; "
            f"shorten the input or build the model with a larger {key}"
        )


def check_config_seq_len(config, seq_len: int, what: str = "sequence length") -> None:
    """Fail before training when `seq_len` exceeds what a model config's positions cover."""
    check_sequence_length(seq_len, config.max_seq_len, config.max_seq_len_key, what)
