"""Fuzzed params files and `--set` overrides, against every stage's config class.

Files: each stage's own params/<stage>.yaml mutated (a value replaced by one of another
type, a key dropped, an unknown key added), random YAML documents, hand-written YAML
oddities (aliases, tags, deep nesting) and random bytes. Overrides: random KEY=VALUE
strings, and real dotted keys of the stage with random YAML values. Properties: a config
comes back, or a PipelineError of one line that names the params file or the `--set` item.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llm_pipeline.config import StageConfig, apply_overrides, load_config, parse_override
from llm_pipeline.errors import PipelineError
from llm_pipeline.stages.base import STAGES, config_class

PARAMS = Path(__file__).resolve().parents[3] / "params"
# FUZZ_EXAMPLES=500 for a longer hunt; the default (per stage) keeps the file within seconds
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def stage_params(stage: str) -> dict[str, Any]:
    return yaml.safe_load((PARAMS / f"{stage}.yaml").read_text()) or {}


def key_paths(data: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every dotted key of a params tree (sections and leaves)."""
    if not isinstance(data, dict):
        return []
    out = []
    for key, value in data.items():
        out.append((*prefix, str(key)))
        out += key_paths(value, (*prefix, str(key)))
    return out


scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=10),
    st.sampled_from(["", "auto", "cpu", "gpt", "bert", "t5", "a/b", "../x", "{x}", "{", "\n", "-1", "1e9"]),
)
value = st.recursive(
    scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6
)

ODD_YAML = [
    "a: &x {b: *x}\n",  # a mapping that holds itself
    "a: &x [*x]\n",
    "a: !!python/object/apply:os.system ['true']\n",
    "? [a, b]\n: c\n",  # an unhashable key
    "a: 1\na: 2\n",
    "\ta: 1\n",
    "--- a\n--- b\n",  # two documents
    "1: x\nnull: y\n",
    "seed: 2020-01-01\n",
    "%YAML 9.9\n---\na: 1\n",
    "\ufeffa: 1\n",
    "a: b: c\n",
    "- 1\n- 2\n",
    "just text",
    "",
]


def _set_path(data: dict[str, Any], keys: tuple[str, ...], new: Any) -> None:
    node: Any = data
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = new


@st.composite
def mutated_params(draw: st.DrawFn, stage: str) -> bytes:
    """The stage's real params file with a few random edits."""
    data = stage_params(stage)
    for _ in range(draw(st.integers(1, 3))):
        keys = key_paths(data)
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if not keys:
            break
        path = draw(st.sampled_from(keys))
        if action == "replace":
            _set_path(data, path, draw(value))
        elif action == "drop":
            node: Any = data
            for k in path[:-1]:
                node = node[k]
            node.pop(path[-1], None)
        else:
            _set_path(data, (*path[:-1], draw(st.text(min_size=1, max_size=6))), draw(value))
    return yaml.safe_dump(data, allow_unicode=draw(st.booleans())).encode()


def params_file(stage: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated_params(stage),
        mutated_params(stage),
        value.map(lambda v: yaml.safe_dump(v).encode()),
        st.sampled_from(ODD_YAML).map(str.encode),
        st.binary(max_size=60),
        st.text(max_size=60).map(str.encode),
    )


override_item = st.one_of(
    st.text(max_size=20),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=8), st.text(max_size=12)),
    st.sampled_from(["a=&x [*x]", "a.=1", ".a=1", "a..b=1", "=1", " =1", "a", "a=!!binary x"]),
)


def check_error(exc: PipelineError, path: Path | None, overrides: list[str]) -> None:
    """One line, starting with the params file or the `--set` item at fault."""
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    names = [f"--set {o!r}: " for o in overrides] + ([f"{path}: "] if path else [])
    assert any(message.startswith(n) for n in names), message


def load(stage: str, data: bytes, overrides: list[str]) -> StageConfig | PipelineError:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{stage}.yaml"
        path.write_bytes(data)
        try:
            return load_config(config_class(stage), path, overrides)
        except PipelineError as exc:
            check_error(exc, path, overrides)
            return exc


@pytest.mark.parametrize("stage", STAGES)
def test_params_files(stage: str) -> None:
    @FUZZ
    @given(data=params_file(stage))
    @example(data=b"a: &x {b: *x}\n")
    def run(data: bytes) -> None:
        load(stage, data, [])

    run()


# nesting deeper than PyYAML's recursive parser goes (each costs it ~0.5 s, so not drawn at random)
DEEP = "[" * 3000 + "]" * 3000


def test_deep_nesting() -> None:
    for data in (DEEP.encode(), ("a: " + "{b: " * 3000 + "1" + "}" * 3000).encode()):
        assert isinstance(load("ingest", data, []), PipelineError)
    params = (PARAMS / "ingest.yaml").read_bytes()
    assert isinstance(load("ingest", params, ["split.seed=" + DEEP]), PipelineError)


def test_every_stage_params_file_loads() -> None:
    """The fuzzing starts from real files: they must load as they are."""
    for stage in STAGES:
        assert isinstance(load(stage, (PARAMS / f"{stage}.yaml").read_bytes(), []), config_class(stage))


@st.composite
def stage_overrides(draw: st.DrawFn, stage: str) -> list[str]:
    keys = key_paths(stage_params(stage))
    items = []
    for _ in range(draw(st.integers(1, 3))):
        real_key = draw(st.booleans())
        if keys and real_key:
            key = ".".join(draw(st.sampled_from(keys)))
            items.append(f"{key}={yaml.safe_dump(draw(value), default_flow_style=True).strip()}")
        else:
            items.append(draw(override_item))
    return items


@pytest.mark.parametrize("stage", STAGES)
def test_overrides(stage: str) -> None:
    @FUZZ
    @given(overrides=stage_overrides(stage))
    @example(overrides=["a.=1"])
    def run(overrides: list[str]) -> None:
        load(stage, (PARAMS / f"{stage}.yaml").read_bytes(), overrides)

    run()


@FUZZ
@given(item=override_item)
@example(item="a=" + DEEP)
@example(item="a.=1")
def test_parse_override(item: str) -> None:
    try:
        keys, _ = parse_override(item)
    except PipelineError as exc:
        check_error(exc, None, [item])
    else:
        assert keys and all(k.strip() for k in keys), keys  # every part of a dotted key names something


@FUZZ
@given(data=st.dictionaries(st.text(max_size=4), value, max_size=4), items=st.lists(override_item, max_size=3))
def test_apply_overrides_leaves_input_alone(data: dict[str, Any], items: list[str]) -> None:
    before = yaml.safe_dump(data)
    try:
        out = apply_overrides(data, items)
    except PipelineError as exc:
        check_error(exc, None, items)
    else:
        if items:  # the last override is applied last, so it holds
            keys, new = parse_override(items[-1])
            node: Any = out
            for k in keys:
                node = node[k]
            assert repr(node) == repr(new)  # repr: NaN != NaN, and a value may hold itself (&x [*x])
    assert yaml.safe_dump(data) == before
