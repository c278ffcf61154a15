"""Choose a Compressor by name from the typed `compression` config section.

The section's defaults and valid values live in feddm_hpc.config (CompressionConfig and its
Literal types): this module only maps a checked section to a codec.
"""

from __future__ import annotations

from typing import Callable, Dict

from feddm_hpc.compression import lossless
from feddm_hpc.compression.base import Compressor
from feddm_hpc.compression.codecs import Float16Compressor, IdentityCompressor, QuantCompressor
from feddm_hpc.compression.topk import TopKCompressor
from feddm_hpc.config import CompressionConfig


def _none(cfg: CompressionConfig, common: dict) -> Compressor:
    return IdentityCompressor(**common)


def _quant(cfg: CompressionConfig, common: dict) -> Compressor:
    if cfg.bits == 16:
        return Float16Compressor(cfg.fp16_format, **common)
    return QuantCompressor(cfg.bits, cfg.chunk_size, bool(cfg.stochastic_rounding), **common)


def _topk(cfg: CompressionConfig, common: dict) -> Compressor:
    return TopKCompressor(float(cfg.topk_fraction), cfg.topk_value_bits, cfg.chunk_size,
                          bool(cfg.stochastic_rounding), cfg.fp16_format, **common)


# By compression.uplink; its names equal the config's Uplink Literal (tests/config/test_config_choices.py).
COMPRESSORS: Dict[str, Callable[[CompressionConfig, dict], Compressor]] = {
    "none": _none, "quant": _quant, "topk": _topk,
}


def make_compressor(cfg: CompressionConfig) -> Compressor:
    """Build the uplink compressor of a CompressionConfig (as loaded, or dataclasses.replace'd).
    Invalid values raise ConfigError naming the field (CompressionConfig.validate), as does
    lossless: zstd without the zstandard package."""
    if not isinstance(cfg, CompressionConfig):
        raise TypeError(f"make_compressor: expected a feddm_hpc.config.CompressionConfig, "
                        f"got {type(cfg).__name__}")
    cfg.validate()
    lossless.check_method(cfg.lossless)
    common = {"error_feedback": bool(cfg.error_feedback), "lossless_method": cfg.lossless}
    return COMPRESSORS[cfg.uplink](cfg, common)
