"""Choose a Compressor by name from the `compression` config section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

from feddm_hpc.errors import ConfigError

from . import lossless
from .base import Compressor
from .codecs import Float16Compressor, IdentityCompressor, QuantCompressor
from .topk import VALUE_BITS, TopKCompressor

VALID_BITS = (16, 8, 4, 2)
FP16_FORMATS = ("fp16", "bf16")

# Defaults for fields a config object may leave out; the config module owns the real defaults.
_DEFAULTS: dict[str, Any] = {
    "bits": 8, "chunk_size": 1024, "stochastic_rounding": False, "error_feedback": False,
    "topk_fraction": 0.01, "topk_value_bits": 32, "lossless": "none", "fp16_format": "fp16",
}


def _field(cfg: Any, name: str) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(name, _DEFAULTS.get(name))
    return getattr(cfg, name, _DEFAULTS.get(name))


def _choice(value: Any, valid: tuple, field: str) -> Any:
    if isinstance(value, bool) or value not in valid:
        raise ConfigError(f"compression.{field}: invalid value {value!r}; valid values: "
                          + ", ".join(str(v) for v in valid))
    return value


def _none(cfg, common) -> Compressor:
    return IdentityCompressor(**common)


def _quant(cfg, common) -> Compressor:
    bits = _field(cfg, "bits")
    if bits == 16:
        fmt = _choice(_field(cfg, "fp16_format"), FP16_FORMATS, "fp16_format")
        return Float16Compressor(fmt, **common)
    return QuantCompressor(bits, _field(cfg, "chunk_size"),
                           bool(_field(cfg, "stochastic_rounding")), **common)


def _topk(cfg, common) -> Compressor:
    fraction = _field(cfg, "topk_fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0.0 < fraction <= 1.0:
        raise ConfigError(f"compression.topk_fraction: must be a number in (0, 1], "
                          f"got {fraction!r}")
    value_bits = _choice(_field(cfg, "topk_value_bits"), VALUE_BITS, "topk_value_bits")
    fmt = _choice(_field(cfg, "fp16_format"), FP16_FORMATS, "fp16_format")
    return TopKCompressor(float(fraction), value_bits, _field(cfg, "chunk_size"),
                          bool(_field(cfg, "stochastic_rounding")), fmt, **common)


COMPRESSORS: dict[str, Callable[[Any, dict], Compressor]] = {
    "none": _none, "quant": _quant, "topk": _topk,
}


def make_compressor(cfg: Any) -> Compressor:
    """Build the uplink compressor from a config section (attributes or a mapping) with fields
    uplink, bits, chunk_size, stochastic_rounding, error_feedback, topk_fraction,
    topk_value_bits, lossless, fp16_format. Invalid values raise ConfigError naming the field."""
    uplink = _field(cfg, "uplink")
    if uplink not in COMPRESSORS:
        raise ConfigError(f"compression.uplink: unknown compressor {uplink!r}; valid names: "
                          + ", ".join(COMPRESSORS))
    _choice(_field(cfg, "bits"), VALID_BITS, "bits")
    chunk = _field(cfg, "chunk_size")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0 or chunk >= 2 ** 31:
        raise ConfigError(f"compression.chunk_size: must be a positive integer, got {chunk!r}")
    method = _field(cfg, "lossless")
    lossless.check_method(method)
    common = {"error_feedback": bool(_field(cfg, "error_feedback")), "lossless_method": method}
    return COMPRESSORS[uplink](cfg, common)
