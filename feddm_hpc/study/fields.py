"""Typed readers for the study spec's YAML: each checks one value and raises a ConfigError naming
its dotted field (`cells.nodp.seeds[1]: expected an integer, got 'a'`), as feddm_hpc.config does."""
from __future__ import annotations

from typing import Any, Iterable, List, Mapping, Optional

from feddm_hpc.config.choices import require
from feddm_hpc.config.loading import render_set_value
from feddm_hpc.errors import ConfigError


def mapping(value, where: str, allow_none: bool = True) -> dict:
    if value is None and allow_none:
        return {}
    require(isinstance(value, Mapping), f"{where}: expected a mapping, got {value!r}")
    return {str(k): v for k, v in value.items()}


def check_keys(data: Mapping, valid: Iterable[str], where: str) -> None:
    valid = tuple(valid)
    for key in data:
        if key not in valid:
            name = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"{name}: unknown key (valid: {', '.join(valid)})")


def integer(value, where: str, minimum: Optional[int] = None) -> int:
    require(isinstance(value, int) and not isinstance(value, bool),
            f"{where}: expected an integer, got {value!r}")
    require(minimum is None or value >= minimum, f"{where}: must be >= {minimum}, got {value}")
    return value


def number(value, where: str) -> float:
    if isinstance(value, str):   # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    require(isinstance(value, (int, float)) and not isinstance(value, bool),
            f"{where}: expected a number, got {value!r}")
    return float(value)


def string(value, where: str, choices: Optional[Iterable[str]] = None) -> str:
    require(isinstance(value, str) and value != "", f"{where}: expected a string, got {value!r}")
    if choices is not None:
        choices = tuple(choices)
        require(value in choices, f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def boolean(value, where: str) -> bool:
    require(isinstance(value, bool), f"{where}: expected true or false, got {value!r}")
    return value


def str_list(value, where: str, allow_single: bool = True) -> List[str]:
    if isinstance(value, str) and allow_single:
        return [value]
    require(isinstance(value, list) and value, f"{where}: expected a non-empty list, got {value!r}")
    return [string(v, f"{where}[{i}]") for i, v in enumerate(value)]


def int_list(value, where: str, minimum: Optional[int] = None) -> List[int]:
    items = value if isinstance(value, list) else [value]
    require(bool(items), f"{where}: expected a non-empty list")
    out = [integer(v, f"{where}[{i}]" if isinstance(value, list) else where, minimum)
           for i, v in enumerate(items)]
    require(len(set(out)) == len(out), f"{where}: repeated values {out}")
    return out


def render_value(value: Any, where: str) -> str:
    """A value as `--set KEY=TEXT` text that the config loader reads back as the same value."""
    return render_set_value(value, where)


def overrides(value, where: str) -> List[str]:
    """A mapping of dotted config keys to values as `--set` texts, in the mapping's order."""
    out = []
    for key, v in mapping(value, where).items():
        require("." in key or key == "seed",
                f"{where}.{key}: expected a dotted config key such as federation.rounds")
        require(key != "seed", f"{where}.seed: the study sets each run's seed (use seeds:)")
        out.append(f"{key}={render_value(v, f'{where}.{key}')}")
    return out
