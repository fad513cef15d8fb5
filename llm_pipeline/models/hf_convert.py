"""Copy our weights into Hugging Face `transformers` reference models of the same shape.

For tests (logits must match), bench (same-shape baselines) and `llm-pipeline export`
(llm_pipeline/export.py): `transformers` is not a run-time dependency (the `hf` extra), so it is
imported inside each function. `to_hf(model)` picks the converter by the model's class; the
family registry does not import this module (no stage depends on it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from llm_pipeline.models.bert import BERT
from llm_pipeline.models.classifier import SequenceClassifier
from llm_pipeline.models.gpt import GPT
from llm_pipeline.models.t5 import T5

_HF_GPT2_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
_GPT2_STYLE = ("learned", "layernorm", True)  # (pos_embedding, norm, bias); mlp: one of _HF_GPT2_ACT
_LLAMA_STYLE = ("rope", "rmsnorm", "swiglu")  # (pos_embedding, norm, mlp); bias either way


def _is_gpt2_style(c) -> bool:
    return (c.pos_embedding, c.norm, c.bias) == _GPT2_STYLE and c.mlp in _HF_GPT2_ACT


def _is_llama_style(c) -> bool:
    return (c.pos_embedding, c.norm, c.mlp) == _LLAMA_STYLE


def _qkv(weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Our fused c_attn (3C, C) or bias (3C,) -> separate q, k, v."""
    return weight.chunk(3, dim=0)


def _load(hf: nn.Module, state: dict[str, torch.Tensor], model: nn.Module) -> nn.Module:
    """Load `state` into `hf`; every HF parameter must be covered (buffers may be absent), and
    every parameter of our `model` must reach the twin (tensors in `state` are views of ours)."""
    missing, unexpected = hf.load_state_dict(state, strict=False)
    params = {name for name, _ in hf.named_parameters(remove_duplicate=False)}
    uncovered = [name for name in missing if name in params]
    used = {tensor.untyped_storage().data_ptr() for tensor in state.values()}
    unused = [name for name, p in model.named_parameters() if p.untyped_storage().data_ptr() not in used]
    if uncovered or unexpected or unused:
        raise ValueError(
            f"weight conversion incomplete: missing {uncovered}, unexpected {unexpected}, unused of ours {unused}"
        )
    return hf


def to_hf_gpt2(model: GPT, attn_implementation: str = "eager") -> nn.Module:
    """GPT2LMHeadModel with `model`'s weights (GPT-2 style configs only)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    if not _is_gpt2_style(c):
        raise ValueError("only the GPT-2 style block (learned positions, LayerNorm with bias, GELU) has a GPT-2 twin")
    # ignored call-arg: attn_implementation is a PreTrainedConfig **kwargs key, unlisted in GPT2Config's signature
    hf_config = GPT2Config(  # type: ignore[call-arg]
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=c.block_config().mlp_hidden,
        activation_function=_HF_GPT2_ACT[c.mlp],
        layer_norm_epsilon=c.norm_eps,
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.dropout,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,  # GPT-2's 50256 is outside small vocabularies
        attn_implementation=attn_implementation,
    )
    state = {}
    for name, tensor in model.state_dict().items():
        # GPT-2's Conv1D stores Linear weights transposed: (in, out)
        is_conv1d = (
            ".h." in name and name.endswith(".weight") and any(part in name for part in ("c_attn", "c_proj", "c_fc"))
        )
        state[name] = tensor.t() if is_conv1d else tensor
    return _load(GPT2LMHeadModel(hf_config), state, model)


def to_hf_llama(model: GPT, attn_implementation: str = "eager") -> nn.Module:
    """LlamaForCausalLM with `model`'s weights (modern configs: RoPE, RMSNorm, SwiGLU).

    Same shape: tied embeddings, one key/value head per query head (no grouping), the same
    RMSNorm eps and RoPE base. With bias=True, Llama's attention_bias and mlp_bias hold ours.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    if not _is_llama_style(c):
        raise ValueError("only the modern block (RoPE, RMSNorm, SwiGLU) has a Llama twin")
    hidden = c.block_config().mlp_hidden
    # ignored call-arg: attn_implementation is a PreTrainedConfig **kwargs key, unlisted in LlamaConfig's signature
    hf_config = LlamaConfig(  # type: ignore[call-arg]
        vocab_size=c.vocab_size,
        hidden_size=c.n_embd,
        intermediate_size=hidden,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        num_key_value_heads=c.n_head,
        head_dim=c.n_embd // c.n_head,
        hidden_act="silu",
        max_position_embeddings=c.block_size,
        rms_norm_eps=c.norm_eps,
        # transformers 5 reads the RoPE base from rope_parameters (rope_theta alone is folded in there)
        rope_parameters={"rope_type": "default", "rope_theta": float(c.rope_base)},
        attention_bias=c.bias,
        mlp_bias=c.bias,
        attention_dropout=c.dropout,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attn_implementation=attn_implementation,
    )
    ours = model.state_dict()
    state = {
        "model.embed_tokens.weight": ours["transformer.wte.weight"],
        "lm_head.weight": ours["lm_head.weight"],  # tied
        "model.norm.weight": ours["transformer.ln_f.weight"],
    }
    kinds = ("weight", "bias") if c.bias else ("weight",)
    for i in range(c.n_layer):
        hf, us = f"model.layers.{i}", f"transformer.h.{i}"
        state[f"{hf}.input_layernorm.weight"] = ours[f"{us}.ln_1.weight"]
        state[f"{hf}.post_attention_layernorm.weight"] = ours[f"{us}.ln_2.weight"]
        for kind in kinds:
            q, k, v = _qkv(ours[f"{us}.attn.c_attn.{kind}"])
            gate, up = ours[f"{us}.mlp.c_fc.{kind}"].chunk(2, dim=0)  # our SwiGLU: silu(first half) * second half
            state.update(
                {
                    f"{hf}.self_attn.q_proj.{kind}": q,
                    f"{hf}.self_attn.k_proj.{kind}": k,
                    f"{hf}.self_attn.v_proj.{kind}": v,
                    f"{hf}.self_attn.o_proj.{kind}": ours[f"{us}.attn.c_proj.{kind}"],
                    f"{hf}.mlp.gate_proj.{kind}": gate,
                    f"{hf}.mlp.up_proj.{kind}": up,
                    f"{hf}.mlp.down_proj.{kind}": ours[f"{us}.mlp.c_proj.{kind}"],
                }
            )
    return _load(LlamaForCausalLM(hf_config), state, model)


def to_hf_gpt(model: GPT, attn_implementation: str = "eager") -> nn.Module:
    """The reference twin of a GPT: GPT2LMHeadModel for the GPT-2 style block, LlamaForCausalLM
    for the modern one. Other mixes (e.g. RoPE with LayerNorm) have no twin: ValueError."""
    c = model.config
    if _is_gpt2_style(c):
        return to_hf_gpt2(model, attn_implementation)
    if _is_llama_style(c):
        return to_hf_llama(model, attn_implementation)
    raise ValueError(
        f"GPT block pos_embedding={c.pos_embedding!r}, norm={c.norm!r}, mlp={c.mlp!r}, bias={c.bias} has no "
        f"transformers twin: GPT2LMHeadModel needs learned positions, LayerNorm with bias and one of "
        f"{', '.join(_HF_GPT2_ACT)}; LlamaForCausalLM needs RoPE, RMSNorm and SwiGLU"
    )


def to_hf_bert(model: BERT, attn_implementation: str = "eager") -> nn.Module:
    """BertForPreTraining with `model`'s weights."""
    from transformers import BertConfig, BertForPreTraining

    c = model.config
    # ignored call-arg: attn_implementation is a PreTrainedConfig **kwargs key, unlisted in BertConfig's signature
    hf_config = BertConfig(  # type: ignore[call-arg]
        vocab_size=c.vocab_size,
        hidden_size=c.n_embd,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        intermediate_size=c.block_config().mlp_hidden,
        hidden_act="gelu",
        hidden_dropout_prob=c.dropout,
        attention_probs_dropout_prob=c.dropout,
        max_position_embeddings=c.max_position_embeddings,
        type_vocab_size=c.type_vocab_size,
        layer_norm_eps=c.norm_eps,
        attn_implementation=attn_implementation,
    )
    ours = model.state_dict()
    state = {
        "bert.embeddings.word_embeddings.weight": ours["embeddings.word.weight"],
        "bert.embeddings.position_embeddings.weight": ours["embeddings.position.weight"],
        "bert.embeddings.token_type_embeddings.weight": ours["embeddings.token_type.weight"],
        "bert.pooler.dense.weight": ours["pooler.weight"],
        "bert.pooler.dense.bias": ours["pooler.bias"],
        "cls.predictions.transform.dense.weight": ours["mlm_transform.weight"],
        "cls.predictions.transform.dense.bias": ours["mlm_transform.bias"],
        "cls.predictions.decoder.weight": ours["embeddings.word.weight"],  # tied
        "cls.predictions.decoder.bias": ours["mlm_bias"],
        "cls.predictions.bias": ours["mlm_bias"],
        "cls.seq_relationship.weight": ours["nsp_head.weight"],
        "cls.seq_relationship.bias": ours["nsp_head.bias"],
    }
    pairs = [("bert.embeddings.LayerNorm", "embeddings.norm"), ("cls.predictions.transform.LayerNorm", "mlm_norm")]
    for i in range(c.n_layer):
        hf, us = f"bert.encoder.layer.{i}", f"layers.{i}"
        for kind in ("weight", "bias"):
            q, k, v = _qkv(ours[f"{us}.attn.c_attn.{kind}"])
            state.update(
                {
                    f"{hf}.attention.self.query.{kind}": q,
                    f"{hf}.attention.self.key.{kind}": k,
                    f"{hf}.attention.self.value.{kind}": v,
                }
            )
        pairs += [
            (f"{hf}.attention.output.dense", f"{us}.attn.c_proj"),
            (f"{hf}.attention.output.LayerNorm", f"{us}.ln_1"),
            (f"{hf}.intermediate.dense", f"{us}.mlp.c_fc"),
            (f"{hf}.output.dense", f"{us}.mlp.c_proj"),
            (f"{hf}.output.LayerNorm", f"{us}.ln_2"),
        ]
    for hf, us in pairs:
        state[f"{hf}.weight"], state[f"{hf}.bias"] = ours[f"{us}.weight"], ours[f"{us}.bias"]
    return _load(BertForPreTraining(hf_config), state, model)


def to_hf_t5(model: T5) -> nn.Module:
    """T5ForConditionalGeneration (v1.0: ReLU, tied and rescaled embeddings) with `model`'s weights."""
    from transformers import T5Config, T5ForConditionalGeneration

    c = model.config
    if c.mlp != "relu":
        raise ValueError("only the T5 v1.0 block (ReLU MLP) is converted")
    # ignored call-arg: tie_word_embeddings and decoder_start_token_id are PreTrainedConfig **kwargs keys, unlisted
    # in T5Config's signature; set afterwards they would not act the same (T5Config reads tie_word_embeddings in init)
    hf_config = T5Config(  # type: ignore[call-arg]
        vocab_size=c.vocab_size,
        d_model=c.n_embd,
        d_kv=c.n_embd // c.n_head,
        d_ff=c.block_config(False).mlp_hidden,
        num_layers=c.n_layer,
        num_decoder_layers=c.n_decoder_layer or c.n_layer,
        num_heads=c.n_head,
        relative_attention_num_buckets=c.num_buckets,
        relative_attention_max_distance=c.max_distance,
        dropout_rate=c.dropout,
        layer_norm_epsilon=c.norm_eps,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        pad_token_id=c.pad_id,
        decoder_start_token_id=c.pad_id,
        eos_token_id=1,
    )
    ours = model.state_dict()
    state = {
        name: ours["shared.weight"]
        for name in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")
    }
    for stack in ("encoder", "decoder"):
        state[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = ours[
            f"{stack}.rel_bias.embedding.weight"
        ]
        state[f"{stack}.final_layer_norm.weight"] = ours[f"{stack}.ln_f.weight"]
        sublayers = [("SelfAttention", "attn", "ln_1")]
        if stack == "decoder":
            sublayers.append(("EncDecAttention", "cross_attn", "ln_cross"))
        for i in range(len(getattr(model, stack).blocks)):
            hf, us = f"{stack}.block.{i}.layer", f"{stack}.blocks.{i}"
            for j, (hf_attn, our_attn, our_norm) in enumerate(sublayers):
                q, k, v = _qkv(ours[f"{us}.{our_attn}.c_attn.weight"])
                state.update(
                    {
                        f"{hf}.{j}.{hf_attn}.q.weight": q,
                        f"{hf}.{j}.{hf_attn}.k.weight": k,
                        f"{hf}.{j}.{hf_attn}.v.weight": v,
                        f"{hf}.{j}.{hf_attn}.o.weight": ours[f"{us}.{our_attn}.c_proj.weight"],
                        f"{hf}.{j}.layer_norm.weight": ours[f"{us}.{our_norm}.weight"],
                    }
                )
            ff = len(sublayers)
            state.update(
                {
                    f"{hf}.{ff}.DenseReluDense.wi.weight": ours[f"{us}.mlp.c_fc.weight"],
                    f"{hf}.{ff}.DenseReluDense.wo.weight": ours[f"{us}.mlp.c_proj.weight"],
                    f"{hf}.{ff}.layer_norm.weight": ours[f"{us}.ln_2.weight"],
                }
            )
    return _load(T5ForConditionalGeneration(hf_config), state, model)


def to_hf(model: nn.Module) -> nn.Module:
    """The `transformers` twin of a pretrained GPT, BERT or T5 (by its class), same weights."""
    converters: dict[type, Any] = {GPT: to_hf_gpt, BERT: to_hf_bert, T5: to_hf_t5}
    if type(model) not in converters:
        raise ValueError(f"{type(model).__name__} has no transformers twin (GPT, BERT and T5 have)")
    return converters[type(model)](model)


def to_hf_bert_classifier(model: SequenceClassifier, labels: list[str]) -> nn.Module:
    """BertForSequenceClassification with a BERT classifier's weights: like ours, the pooled [CLS]
    state, dropout, then a linear head with a bias. The encoder comes from `to_hf_bert`'s twin
    (loaded strictly, every tensor covered); its MLM and NSP heads a classifier does not use."""
    from transformers import BertForSequenceClassification

    if not isinstance(model.backbone, BERT):
        raise ValueError(f"a {type(model.backbone).__name__} classifier has no BertForSequenceClassification twin")
    pretraining: Any = to_hf_bert(model.backbone)  # a BertForPreTraining (transformers' own types)
    config = pretraining.config
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.classifier_dropout = model.dropout.p
    hf = BertForSequenceClassification(config)
    hf.bert.load_state_dict(pretraining.bert.state_dict(), strict=True)
    hf.classifier.load_state_dict(model.head.state_dict(), strict=True)
    return hf
