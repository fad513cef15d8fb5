"""Typed stage configs: load a params YAML, apply `--set a.b=v` overrides, validate.

Every stage config derives from `StageConfig` (pydantic, extra="forbid"), so an unknown
key or a value of the wrong type is rejected with the key's dotted path. A stage that builds
one of several things per invocation (a tokenizer, a family, a fine-tune run: dvc.yaml's
`<stage>@<item>`) derives from `PerItemConfig`: the same `item` key selects it everywhere.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

from llm_pipeline.errors import PipelineError

# registered models are named <register_prefix><family> (pretrain) and <register_prefix><task>-<family>
# (finetune); both stages' params carry the prefix, and a test keeps params/*.yaml's equal
DEFAULT_REGISTER_PREFIX = "llm-pipeline-"


class StageConfig(BaseModel):
    """Base for all configs: strict about unknown keys, validates defaults too."""

    model_config = ConfigDict(extra="forbid", validate_default=True, protected_namespaces=())
    # old key -> its new name: an old params file or --set gets told the new name in one line
    RENAMED: ClassVar[dict[str, str]] = {}


class PerItemConfig(StageConfig):
    """A stage run once per key of one mapping (ITEMS: `tokenizers`, `families`, `runs`); `item`
    names the key this invocation builds (`llm-pipeline <stage> <item>`, i.e. `--set item=<key>`)."""

    ITEMS: ClassVar[str]
    RENAMED: ClassVar[dict[str, str]] = {}
    item: str | None = None

    def items(self) -> dict[str, Any]:
        return getattr(self, self.ITEMS)

    @model_validator(mode="after")
    def _item_is_configured(self) -> PerItemConfig:
        if self.item is not None and self.item not in self.items():
            raise ValueError(f"item {self.item!r} is not in {self.ITEMS} ({', '.join(self.items()) or 'none'})")
        return self

    def selected(self, stage: str) -> tuple[str, Any]:
        """(name, block) of the selected item; one line when none is given or it has no block."""
        known = ", ".join(self.items()) or "none"
        if self.item is None:
            raise PipelineError(
                f"{stage}: no item given; name one of {self.ITEMS} ({known}): llm-pipeline {stage} <item>"
            )
        if self.item not in self.items():
            raise PipelineError(f"{stage}: item {self.item!r} has no block under {self.ITEMS!r} (configured: {known})")
        return self.item, self.items()[self.item]


ConfigT = TypeVar("ConfigT", bound=StageConfig)


def check_folder_names(names: Mapping[str, Any]) -> Mapping[str, Any]:
    """Keys that become folder names (tokenizers, finetune runs): a pydantic field validator body."""
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"name {name!r} must be a folder name (letters, digits, _ . -)")
    return names


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (["a", "b"], 3). The value is parsed as YAML, so `true`, `1e-3`, `[1,2]` work."""
    if "=" not in item:
        raise PipelineError(f"--set {item!r}: expected KEY=VALUE, e.g. --set trainer.max_steps=100")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise PipelineError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise PipelineError(f"--set {item!r}: value is not valid YAML ({_one_line(exc)})") from None
    except RecursionError:  # PyYAML parses nesting by recursion
        raise PipelineError(f"--set {item!r}: value is not valid YAML (nested too deeply)") from None
    keys = key.strip().split(".")
    if not all(k.strip() for k in keys):
        raise PipelineError(f"--set {item!r}: empty part in the dotted key {key.strip()!r}")
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `a.b=v` override set (creating nested dicts)."""
    out = _deep_copy(data)
    for item in overrides:
        keys, value = parse_override(item)
        _set_path(out, keys, value, where=f"--set {item!r}")
    return out


def apply_values(data: dict[str, Any], values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Return a copy of `data` with each {"a.b": value} set, as `--set a.b=value` would (for values
    already parsed, e.g. a profile's YAML); `source` names where they came from in an error."""
    out = _deep_copy(data)
    for key, value in values.items():
        keys = str(key).split(".")
        if not all(k.strip() for k in keys):
            raise PipelineError(f"{source}: empty part in the dotted key {key!r}")
        _set_path(out, keys, copy.deepcopy(value), where=f"{source}: {key!r}")
    return out


def _set_path(node: dict[str, Any], keys: list[str], value: Any, where: str) -> None:
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise PipelineError(f"{where}: {k!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def load_params(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: params file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PipelineError(
            f"{path}: not UTF-8 text: byte offset {exc.start} (line {line}) is "
            f"{raw[exc.start : exc.start + 1]!r}; save the file as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {_one_line(exc)}") from None
    except RecursionError:  # PyYAML parses nesting by recursion
        raise PipelineError(f"{path}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    cycle = _find_cycle(data, (), set(), set())
    if cycle is not None:
        raise PipelineError(f"{path}: key {'.'.join(cycle)!r} holds itself (a YAML alias inside its own anchor)")
    # top-level keys starting with "_" only hold YAML anchors shared by other blocks
    return {k: v for k, v in data.items() if not str(k).startswith("_")}


def build_config(cls: type[ConfigT], data: dict[str, Any], source: str = "params") -> ConfigT:
    """Validate `data` into `cls`, turning pydantic's report into one line per bad key."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            if err["type"] == "extra_forbidden" and key in cls.RENAMED:
                problems.append(f"key {key!r} is now called {cls.RENAMED[key]!r}")
            elif err["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            elif isinstance(err.get("input"), dict):  # a whole section's check: its message names the keys
                problems.append(f"{key!r}: {_message(err)}")
            else:
                problems.append(f"{key!r}: {_message(err)} (got {err.get('input')!r})")
        raise PipelineError(f"{source}: " + "; ".join(problems)) from None


def load_config(cls: type[ConfigT], path: str | Path, overrides: list[str] | None = None) -> ConfigT:
    data = apply_overrides(load_params(path), overrides or [])
    return build_config(cls, data, source=str(path))


def _find_cycle(node: Any, keys: tuple[str, ...], open_: set[int], done: set[int]) -> tuple[str, ...] | None:
    """The key path at which a YAML value contains itself, if one does (`open_`: the
    containers being walked; `done`: those found acyclic, so shared aliases are walked once)."""
    if not isinstance(node, dict | list) or id(node) in done:
        return None
    if id(node) in open_:
        return keys
    open_.add(id(node))
    for key, child in node.items() if isinstance(node, dict) else enumerate(node):
        found = _find_cycle(child, (*keys, str(key)), open_, done)
        if found is not None:
            return found
    open_.discard(id(node))
    done.add(id(node))
    return None


def _one_line(exc: Exception) -> str:
    """PyYAML's messages span lines (problem, then a quoted context); the CLI prints one."""
    return " ".join(str(exc).split())


def _message(err: ErrorDetails) -> str:
    """pydantic's message, without the "Value error, " it puts before a validator's own text."""
    msg = err["msg"]
    return msg.removeprefix("Value error, ") if err["type"] == "value_error" else msg


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}
