"""Typed configs, --set overrides and the CLI's one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_pipeline.cli import main
from llm_pipeline.config import DEFAULT_REGISTER_PREFIX, apply_overrides, load_config
from llm_pipeline.errors import PipelineError
from llm_pipeline.stages.finetune import FinetuneConfig

FINETUNE_INPUTS = "runs:\n  r:\n    task: classification\n    family: gpt\n"  # the matrix finetune cannot default
RUN = "    "  # the indent of a key inside run r's block


def write(tmp_path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_overrides_parse_yaml_values_and_create_sections():
    out = apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c=[1, 2]", "d.e=true", "f=0.001"])
    assert out == {"a": {"b": 2, "c": [1, 2]}, "d": {"e": True}, "f": 0.001}


def test_override_without_equals_is_rejected():
    with pytest.raises(PipelineError, match="expected KEY=VALUE"):
        apply_overrides({}, ["trainer.max_steps"])


def test_unknown_key_is_rejected_by_its_dotted_name(tmp_path):
    with pytest.raises(PipelineError, match=r"unknown key 'runs.r.trainer.max_stpes'"):
        load_config(FinetuneConfig, write(tmp_path, FINETUNE_INPUTS + f"{RUN}trainer:\n{RUN}  max_stpes: 5\n"))


def test_wrong_type_names_the_key_and_value(tmp_path):
    with pytest.raises(PipelineError, match=r"'runs.r.batch_size'.*got 'many'"):
        load_config(FinetuneConfig, write(tmp_path, FINETUNE_INPUTS + f"{RUN}batch_size: many\n"))


def test_set_override_reaches_the_config(tmp_path):
    cfg = load_config(
        FinetuneConfig,
        write(tmp_path, FINETUNE_INPUTS + f"{RUN}batch_size: 4\n"),
        ["runs.r.trainer.devices=2", "item=r"],
    )
    run = cfg.runs["r"]
    assert (run.batch_size, run.trainer.devices, cfg.item) == (4, 2, "r")


def test_the_item_of_a_per_item_stage_is_one_key_everywhere(tmp_path, capsys):
    """tokenize / pretrain / finetune select what they build with `item` (the CLI's positional
    ITEM is the same override); the old names say what they became; an unknown item is refused."""
    from llm_pipeline.config import PerItemConfig
    from llm_pipeline.stages.base import PER_ITEM_STAGES, STAGES, config_class

    classes = {s: config_class(s) for s in STAGES}
    per_item = {s: cls.ITEMS for s, cls in classes.items() if issubclass(cls, PerItemConfig)}
    assert per_item == PER_ITEM_STAGES
    params = write(tmp_path, FINETUNE_INPUTS + f"{RUN}batch_size: 4\n")
    assert main(["finetune", "r", "--params", str(params), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["item"] == "r"
    for argv, message in (
        (["finetune", "--params", str(params), "--set", "run=r"], "key 'run' is now called 'item'"),
        (["finetune", "nope", "--params", str(params)], "item 'nope' is not in runs (r)"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_cli_bad_param_exits_2_with_one_line(tmp_path, capsys):
    code = main(["pretrain", "--params", str(write(tmp_path, "bogus: 1\n"))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "unknown key 'bogus'" in err[0] and "p.yaml" in err[0]


def test_cli_missing_params_file(tmp_path, capsys):
    assert main(["ingest", "--params", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: params file not found" in capsys.readouterr().err


def test_cli_debug_shows_the_traceback(tmp_path):
    with pytest.raises(PipelineError):
        main(["pretrain", "--params", str(write(tmp_path, "bogus: 1\n")), "--debug"])


def test_cli_dry_run_prints_resolved_config(tmp_path, capsys):
    params = str(write(tmp_path, FINETUNE_INPUTS))
    assert main(["finetune", "--params", params, "--set", "runs.r.trainer.max_steps=700", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["runs"]["r"]["trainer"]["max_steps"] == 700 and resolved["runs"]["r"]["max_len"] == 96


def test_the_help_example_runs(capsys):
    """The --help epilog's example is a command the CLI accepts (from the repo root, on its params)."""
    import os
    import shlex
    from pathlib import Path

    from llm_pipeline.cli import build_parser

    epilog = build_parser().epilog
    assert epilog is not None
    example = epilog.removeprefix("Example: ")
    argv = shlex.split(example)
    assert argv[0] == "llm-pipeline"
    cwd = os.getcwd()
    os.chdir(Path(__file__).resolve().parents[2])
    try:
        assert main(argv[1:]) == 0
    finally:
        os.chdir(cwd)
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["families"]["gpt"]["trainer"]["max_steps"] == 500


def test_every_params_file_in_the_repo_validates():
    from pathlib import Path

    from llm_pipeline.stages.base import STAGES, config_class

    root = Path(__file__).resolve().parents[2]
    for stage in STAGES:
        load_config(config_class(stage), root / "params" / f"{stage}.yaml")


def test_yaml_exponent_without_dot_still_becomes_a_float(tmp_path):
    # YAML 1.1 reads 1e-3 as a string; the typed config must still take it as a number
    cfg = load_config(FinetuneConfig, write(tmp_path, FINETUNE_INPUTS + f"{RUN}optim:\n{RUN}  lr: 1e-3\n"))
    assert cfg.runs["r"].optim.lr == 0.001


def test_anchor_holder_keys_are_ignored_and_anchors_resolve(tmp_path):
    text = "_shared: &shared {lr: 0.5}\n" + FINETUNE_INPUTS + f"{RUN}optim: {{<<: *shared, warmup_steps: 3}}\n"
    cfg = load_config(FinetuneConfig, write(tmp_path, text))
    assert (cfg.runs["r"].optim.lr, cfg.runs["r"].optim.warmup_steps) == (0.5, 3)


def test_registered_names_share_one_prefix():
    """Pretrain registers <prefix><family> and finetune <prefix><task>-<family>: one prefix in both params."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    prefixes = {
        f: yaml.safe_load((root / "params" / f"{f}.yaml").read_text())["register_prefix"]
        for f in ("pretrain", "finetune")
    }
    assert set(prefixes.values()) == {DEFAULT_REGISTER_PREFIX}, prefixes
