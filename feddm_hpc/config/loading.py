"""Building a Config from plain data: YAML files, `--set` overrides, checkpoint text; dumping one.

`_build` rejects unknown keys and wrongly typed values with a ConfigError naming the dotted field;
a Literal field must hold one of its values (choices.check_choice). The only conversions are
int -> float and list -> tuple.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Tuple

import yaml

from feddm_hpc.config.choices import check_choice, literal_base
from feddm_hpc.config.sections import Config
from feddm_hpc.config.validation import validate
from feddm_hpc.errors import ConfigError


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Check `value` against a field's type; the only conversions are int->float and list->tuple."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:  # Optional[X], or a union such as Union[int, Literal["auto"]]
        args = typing.get_args(annotation)
        inner = [a for a in args if a is not type(None)]
        if value is None and len(inner) < len(args):
            return None
        if len(inner) == 1:
            return _coerce(value, inner[0], name)
        for option in inner:
            try:
                return _coerce(value, option, name)
            except ConfigError:
                pass
        raise ConfigError(f"{name}: expected {' or '.join(_describe(a) for a in inner)}, "
                          f"got {value!r}")
    if origin is Literal:  # the value's type first (same messages as a plain field), then the set
        return check_choice(_coerce(value, literal_base(annotation), name), annotation, name)
    if origin in (tuple, Tuple):
        item = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            plural = "integers" if item is int else "strings"
            raise ConfigError(f"{name}: expected a list of {plural}, got {value!r}")
        return tuple(_coerce(v, item, name) for v in value)
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{name}: expected a mapping of names to values, got {value!r}")
        return {k: _plain(v, f"{name}.{k}") for k, v in value.items()}
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported annotation {annotation}")


def _plain(value: Any, name: str) -> Any:
    """A copy of YAML plain data (null, booleans, numbers, strings, lists and mappings of them)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, name) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{name}.{k}") for k, v in value.items()}
    raise ConfigError(f"{name}: expected plain YAML data, got {value!r}")


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " or ".join(repr(v) for v in typing.get_args(annotation))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        annotation, str(annotation))


def _build(cls, data: Any, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{where}: unknown key (valid: {', '.join(sorted(known))})")
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        name = f"{prefix}.{f.name}" if prefix else f.name
        hint = hints[f.name]
        if is_dataclass(hint):
            kwargs[f.name] = _build(hint, data[f.name], name)
        else:
            kwargs[f.name] = _coerce(data[f.name], hint, name)
    return cls(**kwargs)


def _apply_override(tree: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected KEY=VALUE")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value is not valid YAML ({exc.problem})") from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    return tree


def config_from_tree(tree: dict, overrides: list[str] = ()) -> Config:
    tree = _deep_copy(tree)
    for assignment in overrides:
        _apply_override(tree, assignment)
    config = _build(Config, tree, "")
    validate(config)
    return config


def _deep_copy(tree):
    if isinstance(tree, dict):
        return {k: _deep_copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_deep_copy(v) for v in tree]
    return tree


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    return config_from_tree(read_yaml(path), overrides)


# Fields whose default changed after checkpoints already existed, with the value every older
# checkpoint was trained with. A checkpoint's resolved config lists every field of its version,
# so a field it lacks predates it: resume and evaluate then keep the recipe the run was trained
# with instead of switching to the new default halfway.
LEGACY_VALUES = {
    ("diffusion", "prediction"): "eps",
    ("diffusion", "loss_weighting"): "none",
    ("client", "lr_schedule"): "constant",
    ("server", "ema_warmup"): False,
}


def config_from_yaml_text(text: str, overrides: list[str] = ()) -> Config:
    """The config stored in a checkpoint (its resolved YAML), with `overrides` on top."""
    tree = yaml.safe_load(text) or {}
    for (section, key), value in LEGACY_VALUES.items():
        node = tree.get(section)
        if isinstance(node, dict) and key not in node:
            node[key] = value
    return config_from_tree(tree, overrides)


def to_tree(config: Config) -> dict:
    def plain(v):
        if isinstance(v, tuple):
            return list(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(config))


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(to_tree(config), sort_keys=False)


def render_set_value(value: Any, where: str, no_whitespace: bool = False) -> str:
    """`value` as the TEXT of `--set KEY=TEXT` that the loader reads back as the same value: the
    one renderer of study specs, scaling specs and the Python API. no_whitespace: refuse strings
    with whitespace (the Slurm sweep file splits its lines on whitespace). ConfigError naming
    `where` for a value no config field can hold."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render_set_value(v, where, no_whitespace) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{render_set_value(v, where, no_whitespace)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, str):
        if no_whitespace and any(ch.isspace() for ch in value):
            raise ConfigError(f"{where}: a value with whitespace cannot be passed on (got {value!r})")
        try:
            if yaml.safe_load(value) == value and "," not in value and value.strip() == value:
                return value
        except yaml.YAMLError:
            pass
        return json.dumps(value)
    raise ConfigError(f"{where}: expected a number, string, boolean, null, list or mapping, "
                      f"got {value!r}")

