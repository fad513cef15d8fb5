"""Write a saved model folder in the Hugging Face format, for `transformers`' from_pretrained.

The twin of each kind of model (models/hf_convert.py builds them; the logits match ours):

- gpt: GPT2LMHeadModel (GPT-2 style block) or LlamaForCausalLM (modern block): AutoModelForCausalLM;
- bert: BertForPreTraining, MLM and NSP heads (AutoModelForPreTraining; AutoModelForMaskedLM
  loads it without the NSP head);
- t5: T5ForConditionalGeneration (AutoModelForSeq2SeqLM);
- a bert classifier: BertForSequenceClassification, labels as id2label. GPT and T5 classifiers
  are refused: GPT2/LlamaForSequenceClassification score with a linear layer without a bias and
  T5ForSequenceClassification reads the decoder, where ours has a bias (GPT) and reads the
  encoder's mean state (T5), so no twin gives our logits.

A LoRA fine-tune's folder holds the merged model (finetune merges before saving), so it exports
as a plain one. Seq2seq fine-tunes keep their prompt format in config.task_specific_params.
The tokenizer is written as tokenizer.json + tokenizer_config.json (+ its special tokens), so
`AutoTokenizer.from_pretrained(dir)` encodes as ours. Needs `transformers` (the `hf` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_pipeline.data.tokenization.tokenizer import BERT_SPECIALS, EOT, T5_SPECIALS
from llm_pipeline.errors import PipelineError
from llm_pipeline.families import get_family
from llm_pipeline.inference import CLASSIFY, LoadedModel, load_model_folder, sentinel_ids
from llm_pipeline.models.bert import BERT
from llm_pipeline.models.hf_convert import to_hf, to_hf_bert_classifier

# why only a BERT classifier has a transformers twin that gives our logits
NO_CLASSIFIER_TWIN = (
    "GPT2/LlamaForSequenceClassification score the last token with a linear layer without a bias (ours has one); "
    "T5ForSequenceClassification classifies the decoder's end-of-text state (ours the encoder's mean state)"
)


def export_hf(folder: str | Path, out_dir: str | Path) -> list[Path]:
    """Write `folder`'s model and tokenizer into `out_dir` (created); returns the files written."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise PipelineError(
            "export needs transformers: pip install 'llm-pipeline[hf]' (or transformers>=5.0)"
        ) from None
    loaded = load_model_folder(folder)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PipelineError(f"{out}: exists and is not a folder; choose a folder to export into")
    hf = hf_model(loaded)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    hf_tokenizer(loaded).save_pretrained(out)
    return sorted(p for p in out.iterdir() if p.is_file())


def hf_model(loaded: LoadedModel) -> Any:
    """The transformers twin of a loaded folder, with its token ids and task settings in the config."""
    where = f"{loaded.folder}: {loaded.what}"
    if loaded.use == CLASSIFY:
        if not isinstance(loaded.model.backbone, BERT):
            raise PipelineError(f"{where} has no exact transformers twin: {NO_CLASSIFIER_TWIN}")
        return to_hf_bert_classifier(loaded.model, loaded.manifest["labels"]).eval()
    try:
        hf: Any = to_hf(loaded.model).eval()  # transformers' own types
    except ValueError as exc:  # a block the twins do not have (e.g. RoPE with LayerNorm)
        raise PipelineError(f"{where} cannot be exported: {exc}") from None
    tok = loaded.tokenizer
    ids = {role: tok.token_to_id(token) for role, token in special_tokens(loaded).items() if isinstance(token, str)}
    generation = getattr(hf, "generation_config", None)  # the generating twins (not BERT) have one
    for role in ("bos", "eos", "pad"):
        if ids.get(role) is not None:
            for config in (hf.config, generation):
                if config is not None:
                    setattr(config, f"{role}_token_id", ids[role])
    if "format" in loaded.manifest:  # a seq2seq fine-tune: how its inputs were written
        hf.config.task_specific_params = {loaded.manifest.get("task", "task"): dict(loaded.manifest["format"])}
    return hf


def special_tokens(loaded: LoadedModel) -> dict[str, Any]:
    """transformers' special-token arguments for the family's tokenizer kind."""
    kind = get_family(loaded.family).tokenizer_kind
    if kind == "bpe":
        return {"bos": EOT, "eos": EOT, "unk": EOT, "pad": EOT}  # GPT-2's one special token, also the pad
    if kind == "wordpiece":
        return {role: BERT_SPECIALS[role] for role in ("pad", "unk", "cls", "sep", "mask")}
    names = [loaded.tokenizer.id_to_token(i) for i in sentinel_ids(loaded.tokenizer)]
    return {"pad": T5_SPECIALS["pad"], "eos": T5_SPECIALS["eos"], "unk": T5_SPECIALS["unk"], "extra_special": names}


def hf_tokenizer(loaded: LoadedModel) -> Any:
    from transformers import PreTrainedTokenizerFast

    tokens = special_tokens(loaded)
    kwargs: dict[str, Any] = {f"{role}_token": token for role, token in tokens.items() if role != "extra_special"}
    if tokens.get("extra_special"):
        kwargs["extra_special_tokens"] = tokens["extra_special"]
    window = loaded.model.config.max_seq_len  # None for T5: relative positions have no hard limit
    if window:
        kwargs["model_max_length"] = window
    return PreTrainedTokenizerFast(tokenizer_object=loaded.tokenizer, **kwargs)
