"""Bug or budget? Our T5 and transformers' T5 trained side by side on copying, plus a position control.

Our fine-tuned T5s ignore their input (loss with the true source ~ loss with a shuffled one).
Either our T5 or its training path is wrong, or the run is too small to learn to read the
source. This probe separates the two:

1. Twins. `ours` is our T5 (from --checkpoint, or with `--checkpoint none` the small-cpu preset
   initialised from --seed); `hf` is to_hf(ours), a T5ForConditionalGeneration with the same
   weights. Both train on the same batches in the same order with the fine-tune's optimizer
   (build_optimizer), warmup-cosine schedule and clipping (1.0), in float32 with dropout 0.
   Ours computes its loss as the fine-tune does (collate_span_corruption's batch ->
   SpanCorruption.compute); hf as transformers does (labels with -100, its own shift right).
   Printed first, where the twins part if they do: step-0 logits (weight mapping), step-1
   gradients of every parameter (forward, loss, backward), step-1 updates (optimizer); HF
   tensors are matched to ours element by element (element_map). Then the loss curves with the
   signed gap (ours - HF) / HF: float noise wanders around 0, a systematic difference keeps its sign.
2. Copy task at fine-tune lengths. Source = a span of --min-len..--max-len tokens + </s>, target
   = the same span + </s>, padded and masked as the seq2seq fine-tune does (EncodedPair ->
   build_seq2seq_loader). Spans are cut from real text tokenized with the checkpoint's
   tokenizer.json (--text: a task parquet's `input` column or a .txt file), else drawn uniformly
   from the ordinary ids (no specials or sentinels). Every training pair is seen once.
3. Position control. T5's only position signal is its bucketed relative bias (exact up to 8
   tokens apart in the encoder, log-spaced beyond) and cross-attention has none: the decoder
   must find its place in the source by content. The control is ours plus learned absolute
   position tables added to the encoder and decoder inputs (a subclass here; llm_pipeline is
   untouched), from the same weights, optimizer and batches. Of the two options (this, or our
   GPT as a prompted copier) it changes one thing only, so a gap between ours and the control
   is the position signal, not another architecture, init or budget. Held-out greedy accuracy
   is split by target position for that reason.

Reading it: twins equal -> no bug in our model or loss path (relative to transformers). Then:
ours copies -> the task fine-tunes are short of data/steps, not broken; ours fails and the
control copies -> relative positions limit copying at these lengths; both fail -> budget.

    .venv/bin/python bench/copy_probe.py --checkpoint none
    .venv/bin/python bench/copy_probe.py --checkpoint data/pretrain/t5 \
        --text data/ingest/tasks/translation/train.parquet

Measured 2026-12-07 on 2 CPU cores shared with pipeline runs and tests (so the seconds column
is no timing: ~10 min per 60-step run there, 3 models of 3.6M parameters), float32; the commit
is HEAD at the time, with this file uncommitted:

    .venv/bin/python bench/copy_probe.py --checkpoint /tmp/ab/out/span/pretrain/t5 \
        --text /tmp/ab/proj/data/ingest/tasks/translation/train.parquet        # commit fba5bde

  (the default small-cpu T5 after the pipeline's 1000 steps of span corruption.) Step-0 logits
  equal (max |diff| 0.0); step-1 gradients within 2.2e-6 (median 1.8e-7 over 47 tensors);
  step-1 updates: every attention q off by 70-71%, the rest within ~1e-6. Loss ours / HF:
  6.526 / 6.526 (step 1), 6.165 / 6.160 (20), 6.184 / 6.169 (60); largest gap 6.0e-3 (step 34),
  mean gap +1.6e-6. Held-out (64): greedy exact match 0 for ours, HF and control, greedy token
  accuracy <= 0.016 at every position band; loss true / shuffled source: ours 6.087 / 6.144,
  HF 6.089 / 6.145, control 6.150 / 6.212.

    .venv/bin/python bench/copy_probe.py --checkpoint none                   # commit 20a25f7

  Same first-step picture (logits 0.0, gradients within 6.2e-7, q updates 83-84% off). Loss
  gap -8e-6 (10), +1.1e-4 (20), +3.0e-4 (30), +7.8e-4 (40), the same in two runs, each stopped
  (SIGSTOP) by another job before its end. With --steps 100 --eval-size 128 (an earlier
  revision of this file, same training path) ours sat above HF at every logged step: 8.878 vs
  8.822 at step 100 (gap +6.3e-3, largest +8.5e-3), control 8.940; greedy exact 0, token
  accuracy <= 0.002; ours' held-out loss 8.839 true vs 9.041 shuffled source.

  With AdamW the twins stay together: `--checkpoint <a tiny-preset T5> --steps 20 --optimizer
  adamw --lr 1e-3` gave step-1 updates within 3.7e-5 and loss curves within 6.6e-8; the same
  with Adafactor (lr 0.01), q updates 70% off and curves within 2.1e-4.

Findings. No bug in our T5's forward, loss path or backward: same logits, same gradients. The
twins part at the optimizer: Adafactor scales each tensor's step by that tensor's RMS, and our
q, k, v live in one fused c_attn (3C, C), whose RMS at init (0.059) is ~5.7x that of q alone
(0.0104: T5's init gives q the extra hs**-0.5). So each q step is ~5.7x what T5 / transformers
take (5.6-6.0x measured at step 1 from scratch), and k, v steps 0.7-0.95x (shared column
statistics): the query of every attention, cross-attention included, moves far faster than in
T5's recipe. From scratch ours then trails HF (+0.06 nats at step 100); from the pretrained
checkpoint the curves drift apart by up to 0.6% without a consistent sign. Budget: at 960 copy
pairs no model copies, the absolute-position control included, so these runs show no position
limit; the fine-tunes' own budget (`--steps 300 --batch-size 32`) was not run here.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(_HERE)] + [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from llm_pipeline.data.loaders.seq2seq import EncodedPair, build_seq2seq_loader  # noqa: E402
from llm_pipeline.families import get_family  # noqa: E402
from llm_pipeline.model_files import load_pretrained  # noqa: E402
from llm_pipeline.models.blocks import IGNORE_INDEX  # noqa: E402
from llm_pipeline.models.hf_convert import to_hf  # noqa: E402
from llm_pipeline.models.t5 import T5, T5Config  # noqa: E402
from llm_pipeline.training.objectives import SpanCorruption  # noqa: E402
from llm_pipeline.training.optim import OptimConfig, build_optimizer  # noqa: E402
from llm_pipeline.training.schedule import build_schedule  # noqa: E402

HF_IGNORE = -100  # transformers' ignored label (ours is IGNORE_INDEX)
# greedy accuracy per band of target positions; with 32 buckets the encoder's exact offsets end at 8
POSITION_BANDS = (0, 8, 16, 32, 64)


class T5WithPositions(T5):
    """Control: T5 plus learned absolute positions added to the encoder and decoder embeddings."""

    def __init__(self, config: T5Config, max_positions: int) -> None:
        super().__init__(config)
        self.enc_pos = nn.Embedding(max_positions, config.n_embd)
        self.dec_pos = nn.Embedding(max_positions, config.n_embd)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.arange(input_ids.size(1), device=input_ids.device)  # (S,): right padding
        return self.encoder(self.shared(input_ids) + self.enc_pos(positions), attention_mask)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        cache: list | None = None,
    ) -> torch.Tensor:
        past = len(cache[0][0]) if cache else 0  # cached decoding feeds one token at a time
        positions = torch.arange(past, past + decoder_input_ids.size(1), device=decoder_input_ids.device)
        x = self.shared(decoder_input_ids) + self.dec_pos(positions)  # (B, T, C)
        h = self.decoder(x, memory=memory, memory_mask=memory_mask, cache=cache)
        return self.lm_head(h * self.config.n_embd**-0.5)


def load_model(checkpoint: str, seed: int) -> tuple[T5, int, int, Tokenizer | None]:
    """Our T5 with dropout 0, its pad and end ids, and its tokenizer (None without a checkpoint)."""
    torch.manual_seed(seed)
    if checkpoint == "none":  # the unigram tokenizer's layout: <pad> 0, </s> 1, <unk> 2, sentinels
        fresh = get_family("t5").build_model("small-cpu", 8192, pad_id=0, dropout=0.0)
        assert isinstance(fresh, T5)
        return fresh, 0, 1, None
    loaded, meta = load_pretrained(checkpoint, family="t5")
    model = get_family("t5").model_from_config({**meta["config"], "dropout": 0.0})  # rebuilt: dropout off
    assert isinstance(model, T5)
    model.load_state_dict(loaded.state_dict())
    tokenizer = Tokenizer.from_file(str(Path(checkpoint) / "tokenizer.json"))
    end_id = tokenizer.token_to_id("</s>")
    assert end_id is not None, f"{checkpoint}: its tokenizer has no </s>"
    return model, int(model.config.pad_id), end_id, tokenizer


def make_pairs(
    args: argparse.Namespace, vocab: int, end_id: int, tokenizer: Tokenizer | None
) -> tuple[list[EncodedPair], list[EncodedPair]]:
    """Training pairs (steps x batch, each seen once) and held-out pairs: source = target = span + </s>."""
    rng = random.Random(args.seed)
    n_train, n_eval = args.steps * args.batch_size, args.eval_size
    specials = set(tokenizer.get_added_tokens_decoder()) if tokenizer else set(range(103))  # pad, </s>, unk, sentinels
    if args.text:  # real text: one token stream; training spans from its first 90%, held-out from the rest
        path = Path(args.text)
        assert tokenizer is not None
        texts = pd.read_parquet(path)["input"].tolist() if path.suffix == ".parquet" else path.read_text().splitlines()
        stream = [
            i for e in tokenizer.encode_batch(texts, add_special_tokens=False) for i in e.ids if i not in specials
        ]
        cut = int(0.9 * len(stream))

        def span(lo: int, hi: int, n: int) -> list[int]:
            start = rng.randrange(lo, hi - n)
            return stream[start : start + n]

        draw = [lambda n: span(0, cut, n), lambda n: span(cut, len(stream), n)]
    else:  # uniform ordinary ids: no prior to lean on, only the source
        ordinary = [i for i in range(vocab) if i not in specials]
        draw = [lambda n: rng.choices(ordinary, k=n)] * 2
    pairs = []
    for count, sample in zip((n_train, n_eval), draw, strict=True):
        spans = [sample(rng.randint(args.min_len, args.max_len)) for _ in range(count)]
        pairs.append([EncodedPair(s + [end_id], s + [end_id]) for s in spans])
    return pairs[0], pairs[1]


def element_map(model: T5) -> dict[str, torch.Tensor]:
    """Which of our parameter elements each transformers parameter holds (q, k, v are slices of
    our fused c_attn): to_hf of a copy whose elements are numbered 0, 1, 2, ... in the order of
    model.parameters(), in float64 (integers exact up to 2**53). -> HF name -> indices (int64)."""
    numbered, offset = copy.deepcopy(model).double(), 0
    with torch.no_grad():
        for p in numbered.parameters():
            p.copy_(torch.arange(offset, offset + p.numel(), dtype=torch.float64).view_as(p))
            offset += p.numel()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the twin is built in the default dtype
    try:
        twin = to_hf(numbered)
    finally:
        torch.set_default_dtype(default)
    return {name: p.detach().long() for name, p in twin.named_parameters()}


def twin_gap(
    ours: list[torch.Tensor], hf: dict[str, torch.Tensor], index: dict[str, torch.Tensor], what: str
) -> tuple[float, str]:
    """Print the largest relative L2 gaps of HF tensors (gradients, updates) from ours laid out the
    same way, and the median; return the largest and its name. ours: one tensor per our parameter,
    in model.parameters() order."""
    flat = torch.cat([t.reshape(-1) for t in ours])  # (N,) in element_map's order
    gaps = []
    for name, theirs in hf.items():
        want = flat[index[name].to(flat.device)]  # ours, laid out as HF's parameter
        gaps.append((((theirs - want).norm() / want.norm().clamp(min=1e-30)).item(), name))
    gaps.sort(reverse=True)
    worst = ", ".join(f"{name} {gap:.1e}" for gap, name in gaps[:2])
    print(
        f"step 1 {what}, relative gap ours vs HF: largest {worst}; median {gaps[len(gaps) // 2][0]:.1e} of {len(gaps)}"
    )
    return gaps[0]


def compute_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(token-mean loss, teacher-forced token accuracy). Ours: the fine-tune's SpanCorruption.
    transformers': its own path, labels with -100 and its own shift right of them."""
    if isinstance(model, T5):
        loss, metrics = SpanCorruption().compute(model, batch)
        return loss, metrics["acc"][0]
    labels = batch["labels"]  # (B, J), IGNORE_INDEX on padding
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=labels.masked_fill(labels == IGNORE_INDEX, HF_IGNORE),
    )
    real = labels != IGNORE_INDEX
    return out.loss, (out.logits.argmax(-1)[real] == labels[real]).float().mean()


def check_first_step(ours: T5, hf: nn.Module, batch: dict[str, torch.Tensor], optim_cfg: OptimConfig) -> dict:
    """Where the twins part, if they do: step-0 logits (weight mapping), step-1 gradients (forward,
    loss and backward), step-1 updates (optimizer). Done on copies, so the run itself is untouched."""
    index = element_map(ours)
    ours, hf = copy.deepcopy(ours), copy.deepcopy(hf)
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["decoder_input_ids"], batch["attention_mask"]).logits  # (B, J, V)
        b = hf(**{k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}).logits
    checks = {"logits": ((a - b).abs().max().item(), "")}
    print(f"step 0 logits: max |ours - HF| {checks['logits'][0]:.1e}")
    for model in (ours, hf):
        compute_loss(model, batch)[0].backward()
    # every parameter takes part in the loss, so every one has a gradient (cast: for the type checker)
    ours_grads = [cast(torch.Tensor, p.grad) for p in ours.parameters()]
    hf_grads = {n: cast(torch.Tensor, p.grad) for n, p in hf.named_parameters()}
    checks["gradients"] = twin_gap(ours_grads, hf_grads, index, "gradients")
    before = [p.detach().clone() for p in ours.parameters()], {n: p.detach().clone() for n, p in hf.named_parameters()}
    for model in (ours, hf):
        build_optimizer(model, optim_cfg).step()  # no warmup factor: relative gaps do not depend on lr
    ours_updates = [p.detach() - b for p, b in zip(ours.parameters(), before[0], strict=True)]
    hf_updates = {n: p.detach() - before[1][n] for n, p in hf.named_parameters()}
    checks["updates"] = twin_gap(ours_updates, hf_updates, index, "updates")
    return checks


def train_side_by_side(
    models: dict[str, nn.Module], loader: Iterable[dict[str, torch.Tensor]], optim_cfg: OptimConfig, args
) -> tuple[dict, list[float]]:
    """Train every model on the same batches and print the table. -> (check_first_step's gaps,
    (loss ours - loss HF) / loss HF per step)."""
    optimizers = {name: build_optimizer(model.train(), optim_cfg) for name, model in models.items()}
    schedules = {
        name: build_schedule(opt, "cosine", warmup_steps=args.warmup, max_steps=args.steps, min_lr_ratio=0.1)
        for name, opt in optimizers.items()
    }
    gaps, started = [], time.perf_counter()
    for step, batch in enumerate(loader, start=1):
        if step == 1:
            checks = check_first_step(cast(T5, models["ours"]), models["hf"], batch, optim_cfg)
            print(
                f"{'step':>5} {'loss ours':>9} {'loss HF':>9} {'gap':>8} {'acc ours':>8} {'acc HF':>6} "
                f"{'loss ctrl':>9} {'acc ctrl':>8} {'s':>5}"
            )
        row = []
        for name, model in models.items():  # dropout is 0: train mode computes what eval mode does
            loss, acc = compute_loss(model, batch)
            optimizers[name].zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the fine-tune's gradient_clip_val
            optimizers[name].step()
            schedules[name].step()
            row += [loss.item(), acc.item()]
        (la, aa, lb, ab, lc, ac), seconds = row, time.perf_counter() - started
        gaps.append((la - lb) / lb)
        if step % args.log_every == 0 or step in (1, args.steps):
            print(
                f"{step:5d} {la:9.4f} {lb:9.4f} {gaps[-1]:8.1e} {aa:8.3f} {ab:6.3f} {lc:9.4f} {ac:8.3f} {seconds:5.0f}"
            )
    return checks, gaps


def judge(checks: dict, gaps: list[float], tolerance: float) -> str:
    """One line: where ours and HF part, from the first-step checks and the loss curves."""
    (logits, _), (grad, grad_at), (update, update_at) = checks["logits"], checks["gradients"], checks["updates"]
    curves, over = max(map(abs, gaps)), next((i + 1 for i, g in enumerate(gaps) if abs(g) > tolerance), None)
    if logits > 1e-4:
        return f"BUG: step-0 logits differ by {logits:.1e}: the weights map wrongly or the forwards differ"
    if grad > 1e-4:
        return f"BUG in forward, loss or backward: the gradient of {grad_at} is off by {grad:.1e}"
    if update > 1e-3:
        return (
            f"forward, loss and backward agree (gradients within {grad:.0e}); the optimizer's updates do not "
            f"({update_at} off by {update:.0%}), so the curves drift apart (up to {curves:.1e})"
        )
    if over is None:
        return f"agree within {tolerance:.0e}: logits, gradients, updates and curves"
    return f"DISAGREE from step {over} although step 1 agreed: look at later steps (optimizer state, schedule)"


def eval_batches(pairs: list[EncodedPair], pad_id: int, device: str) -> list[dict[str, torch.Tensor]]:
    """The held-out pairs in order, batched as the fine-tune's validation batches them."""
    loader = build_seq2seq_loader(pairs, "encoder_decoder", pad_id, 32, train=False)
    return [{k: v.to(device) for k, v in batch.items()} for batch in loader]


def greedy_scores(generate, batches: list[dict[str, torch.Tensor]], end_id: int) -> tuple[float, list[float]]:
    """Exact match and per-band token accuracy of greedy outputs; generate(ids, mask) -> (B, n) new tokens."""
    hits, right, total = 0, [0] * (len(POSITION_BANDS) - 1), [0] * (len(POSITION_BANDS) - 1)
    for batch in batches:
        out = generate(batch["input_ids"], batch["attention_mask"]).tolist()
        for row, label in zip(out, batch["labels"].tolist(), strict=True):
            want = [t for t in label if t != IGNORE_INDEX]  # span + </s>
            got = row[: row.index(end_id) + 1] if end_id in row else row
            hits += got == want
            for pos, token in enumerate(want):
                band = sum(pos >= b for b in POSITION_BANDS[1:-1])
                right[band] += pos < len(got) and got[pos] == token
                total[band] += 1
    return hits / sum(len(b["labels"]) for b in batches), [
        r / t if t else float("nan") for r, t in zip(right, total, strict=True)
    ]


@torch.no_grad()
def source_dependence(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> tuple[float, float]:
    """Held-out loss with the true sources, and with the sources shuffled across rows (the issue's test)."""
    losses = [0.0, 0.0]
    for batch in batches:
        perm = torch.randperm(len(batch["labels"]), generator=torch.Generator().manual_seed(0)).to(
            batch["labels"].device
        )
        shuffled = {**batch, "input_ids": batch["input_ids"][perm], "attention_mask": batch["attention_mask"][perm]}
        losses[0] += compute_loss(model, batch)[0].item()
        losses[1] += compute_loss(model, shuffled)[0].item()
    return losses[0] / len(batches), losses[1] / len(batches)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="none", help="pretrained T5 folder (data/pretrain/t5), or none")
    parser.add_argument("--text", help="text to cut spans from (parquet `input` column or .txt); needs --checkpoint")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--min-len", type=int, default=8, help="shortest span, </s> not counted")
    parser.add_argument("--max-len", type=int, default=63, help="longest span: source and target <= max-len + 1")
    parser.add_argument("--optimizer", choices=["adamw", "adafactor"], default="adafactor")
    parser.add_argument("--lr", type=float, default=0.01, help="peak lr (the T5 fine-tunes' Adafactor 0.01)")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--eval-size", type=int, default=64, help="held-out pairs for greedy decoding")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest relative loss gap called agreement")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.text and args.checkpoint == "none":
        parser.error("--text needs --checkpoint (its tokenizer.json)")
    return args


def main() -> None:
    args = parse_args()
    ours, pad_id, end_id, tokenizer = load_model(args.checkpoint, args.seed)
    control = T5WithPositions(ours.config, args.max_len + 1)
    missing = control.load_state_dict(ours.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["dec_pos.weight", "enc_pos.weight"], missing
    for table in (control.enc_pos, control.dec_pos):  # as large as the token embeddings they add to
        nn.init.normal_(table.weight, std=ours.shared.weight.std().item())
    # the twin: same weights; a deep copy so that no storage is shared with ours
    models = {"ours": ours, "hf": to_hf(copy.deepcopy(ours)), "control": control}
    for model in models.values():
        model.to(args.device).float()
    train, held_out = make_pairs(args, ours.config.vocab_size, end_id, tokenizer)
    loader = build_seq2seq_loader(train, "encoder_decoder", pad_id, args.batch_size, train=True, seed=args.seed)
    batches = ({k: v.to(args.device) for k, v in batch.items()} for batch in loader)
    print(
        f"checkpoint {args.checkpoint}: {sum(p.numel() for p in ours.parameters()) / 1e6:.2f}M parameters, "
        f"vocab {ours.config.vocab_size}; spans {args.min_len}..{args.max_len} + </s> from "
        f"{args.text or 'uniform ordinary ids'}; {args.optimizer} lr {args.lr}; {args.steps} steps x {args.batch_size}"
    )
    optim_cfg = OptimConfig(name=args.optimizer, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.98))
    checks, gaps = train_side_by_side(models, batches, optim_cfg, args)
    worst = max(range(len(gaps)), key=lambda i: abs(gaps[i]))
    print(
        f"loss curves ours vs HF: largest relative gap {gaps[worst]:+.1e} (step {worst + 1}), mean "
        f"{sum(gaps) / len(gaps):+.1e} (noise averages out, a bias does not)"
    )
    print("verdict: " + judge(checks, gaps, args.tolerance))

    new = args.max_len + 1  # the longest target, </s> included
    hf_options = dict(max_new_tokens=new, do_sample=False, num_beams=1, eos_token_id=end_id, pad_token_id=pad_id)
    hf_model = cast(Any, models["hf"])  # transformers' generate, untyped
    generators = {
        "ours": lambda ids, mask: ours.generate(ids, new, attention_mask=mask, stop_ids=(end_id,)),
        "hf": lambda ids, mask: hf_model.generate(input_ids=ids, attention_mask=mask, **hf_options)[:, 1:],
        "control": lambda ids, mask: control.generate(ids, new, attention_mask=mask, stop_ids=(end_id,)),
    }  # (B, n) new tokens each: HF's output starts with the decoder start token
    bands = " ".join(f"{lo}-{hi - 1}" for lo, hi in zip(POSITION_BANDS, POSITION_BANDS[1:]))
    print(
        f"held-out ({len(held_out)} pairs): greedy exact match; greedy token accuracy at target positions {bands}; "
        "loss with true / shuffled sources"
    )
    held_out_batches = eval_batches(held_out, pad_id, args.device)
    for name, model in models.items():
        model.eval()
        exact, by_band = greedy_scores(generators[name], held_out_batches, end_id)
        true, shuffled = source_dependence(model, held_out_batches)
        accuracy = " ".join(f"{a:.3f}" for a in by_band)
        print(f"  {name:8s} exact {exact:.3f}  tokens {accuracy}  loss {true:.3f} / {shuffled:.3f}")


if __name__ == "__main__":
    main()
