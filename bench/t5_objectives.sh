#!/usr/bin/env bash
# Which T5 pretraining mixture serves the writers? Pretrain T5 once per variant, fine-tune
# translation-t5 and summarization-t5 from it with params/finetune.yaml's recipe, and score them
# with params/evaluate.yaml: span-corruption val loss, chrF / ROUGE-L and source_gain side by side.
#
#   bench/t5_objectives.sh PROJECT OUT 'span:{"span_corruption": 1}' 'mix:{"span_corruption": 2, "prefix_lm": 1, "denoise": 1}'
#
# PROJECT: a checkout where the pipeline has run (data/ingest, data/tokenize/unigram); nothing in
# it is changed. OUT: where each variant's models and reports go. Each variant is NAME:JSON
# (families.t5.data.objective_mix), optionally NAME:JSON:TOKENIZE_ROOT to pretrain on other
# unigram shards. Tracking is off; about 10 min per variant on 2 CPU cores.
set -euo pipefail
project=$(realpath "$1"); out=$(realpath -m "$2"); shift 2
here=$(dirname "$(realpath "$0")")
cli="$here/../.venv/bin/llm-pipeline"
export LLM_PIPELINE_TRACKING=off
for variant in "$@"; do
  name=${variant%%:*}; rest=${variant#*:}
  mix=${rest%%\}*}\}; tok_root=${rest#"$mix"}; tok_root=${tok_root#:}; tok_root=${tok_root:-data/tokenize}
  dir="$out/$name"; mkdir -p "$dir"
  # the stages read PROJECT's params and data through links and write only under $dir (reports/ too)
  ln -sfn "$project/params" "$dir/params"; ln -sfn "$project/data" "$dir/data"; cd "$dir"
  echo "== $name: objective_mix $mix, shards $tok_root"
  "$cli" pretrain t5 --set "families.t5.data.objective_mix=$mix" --set "tokenize_root=$tok_root" \
    --set "output_dir=$dir/pretrain" --set "checkpoint_root=$dir/checkpoints" --set "plots_dir=$dir/plots" \
    --set families.t5.trainer.enable_progress_bar=false
  for run in translation-t5 summarization-t5; do
    "$cli" finetune "$run" --set "pretrain_root=$dir/pretrain" --set "output_dir=$dir/finetune" \
      --set "checkpoint_root=$dir/checkpoints" --set "plots_dir=$dir/plots"
  done
  "$cli" evaluate --set "pretrain_root=$dir/pretrain" --set "finetune_root=$dir/finetune" \
    --set "tokenize_root=$tok_root" --set 'families=[t5]' --set 'runs=[translation-t5, summarization-t5]'
  cp reports/evaluate.json "$dir/evaluate.json"
  cd - >/dev/null
done
"$here/../.venv/bin/python" - "$out" "$@" <<'PY'
import json, sys
from pathlib import Path
out, variants = Path(sys.argv[1]), [v.split(":", 1)[0] for v in sys.argv[2:]]
keys = [("span_corruption", "t5", "loss"), ("span_corruption", "t5", "accuracy"),
        ("translation", "t5", "chrf"), ("translation", "copy_source", "chrf"), ("translation", "t5", "source_gain"),
        ("summarization", "t5", "rougeL"), ("summarization", "lead_k", "rougeL"), ("summarization", "t5", "source_gain")]
print("| variant | " + " | ".join(f"{t} {s} {m}" for t, s, m in keys) + " |")
print("|---" * (len(keys) + 1) + "|")
for name in variants:
    metrics = json.loads((out / name / "evaluate.json").read_text())["metrics"]
    print(f"| {name} | " + " | ".join(f"{metrics.get(f'eval/{t}/{s}/{m}', float('nan')):.3f}" for t, s, m in keys) + " |")
PY
