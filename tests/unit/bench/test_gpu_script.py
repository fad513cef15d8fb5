"""bench/gpu.sh, the first GPU hour's script, known to work before a GPU sees it: its
`--cpu-smoke` runs every step at tiny sizes on the CPU, and each step's record must hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
STEPS = ["env", "gpt", "gpt-modern", "families", "fsdp", "resume", "pipeline"]


def load_gpu_check():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "bench"))
    return gpu_check


@pytest.mark.slow
def test_cpu_smoke_runs_every_step_and_writes_the_table(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    done = subprocess.run(
        [str(REPO / "bench" / "gpu.sh"), "--cpu-smoke", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    failed = [r for r in records if not r["ok"]]
    assert done.returncode == 0 and not failed, f"{failed}\n{(out / 'gpu.log').read_text()[-3000:]}"
    assert [r["step"] for r in records] == STEPS
    by_step = {r["step"]: r for r in records}
    assert by_step["gpt"]["tokens_per_sec"] > 0 and by_step["gpt"]["mfu_measured_peak"] > 0
    assert by_step["gpt-modern"]["preset"] == "tiny-modern"
    # on the CPU a run killed after a checkpoint and rerun ends bitwise where an uninterrupted one does
    assert by_step["resume"]["bitwise_equal"] and by_step["resume"]["killed_after_step"] > 0
    assert by_step["fsdp"]["bitwise_equal"] and by_step["fsdp"]["strategy"] == "auto"
    assert {"bert", "t5"} <= set(by_step["families"])
    scores = by_step["pipeline"]["scores"]
    assert {"topics/gpt/macro_f1", "topics/majority/macro_f1", "topics/tfidf_logreg/macro_f1"} <= set(scores)
    table = (out / "table.md").read_text()
    assert all(f"| {step} |" in table for step in STEPS) and "failed" not in table


def test_a_failed_step_is_a_row_of_its_own_and_the_rest_still_render(tmp_path):
    gpu_check = load_gpu_check()
    rows = [
        {"step": "env", "ok": False, "error": "timed out after 60 s: ...", "seconds": 60},
        {
            "step": "resume",
            "ok": True,
            "seconds": 31.0,
            "killed_after_step": 7,
            "resumed_from": "step-000007.ckpt",
            "val_loss_gap": 0.0123,
            "bitwise_equal": False,
            "max_abs_diff": 0.004,
        },
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gpu_check.main(["table", "--out", str(tmp_path), "--work", str(tmp_path / "work")])
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[2] == "| env | **failed**: timed out after 60 s: ... | 60 |"
    assert "SIGKILL after step 7" in table[3] and "max |diff| 0.004" in table[3] and "0.0123" in table[3]


def test_a_step_that_raises_records_its_error_and_exits_nonzero(tmp_path, monkeypatch):
    gpu_check = load_gpu_check()

    def broken(ctx, size):
        raise gpu_check.StepFailed("no halfway checkpoint step-000030.ckpt")

    monkeypatch.setitem(gpu_check.STEPS, "fsdp", broken)
    assert gpu_check.main(["fsdp", "--out", str(tmp_path), "--work", str(tmp_path / "w"), "--cpu-smoke"]) == 1
    (entry,) = gpu_check.read_results(tmp_path)
    assert entry["step"] == "fsdp" and not entry["ok"]
    assert entry["error"] == "StepFailed: no halfway checkpoint step-000030.ckpt"
