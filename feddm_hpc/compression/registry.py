"""Choose a Compressor by name from the typed `compression` config section.

The section's defaults and valid values live in feddm_hpc.config (CompressionConfig and its
Literal types): this module only maps a checked section to a codec. `compression.uplink` may also
name a user's Compressor subclass by import path, `package.module:Name` (load_user_codec; its codec
ids must lie in USER_CODEC_IDS, docs/extending.md).
"""

from __future__ import annotations

from typing import Callable, Dict

from feddm_hpc.compression import base, lossless
from feddm_hpc.compression.base import Compressor
from feddm_hpc.compression.codecs import Float16Compressor, IdentityCompressor, QuantCompressor
from feddm_hpc.compression.header import CODEC_NAMES
from feddm_hpc.compression.topk import TopKCompressor
from feddm_hpc.config import CompressionConfig
from feddm_hpc.errors import ConfigError
from feddm_hpc.plugins import is_import_path, load_class

# Codec ids a user's codec may take (the header's codec byte); the package's own stay below 128.
USER_CODEC_IDS = range(128, 256)


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
    if is_import_path(cfg.uplink):
        return _user_codec(cfg, common)
    return COMPRESSORS[cfg.uplink](cfg, common)


def load_user_codec(path: str, field: str = "compression.uplink") -> type:
    """A user's Compressor subclass by import path, checked and registered for decoding:
    `name` a string, `codec_ids` a non-empty tuple of ints in USER_CODEC_IDS (128-255), none of
    them taken by another class. Registering is idempotent, so every rank (and every build in one
    process) may call this; decode_payload then decodes its payloads like a built-in's."""
    cls = load_class(path, field, Compressor)
    name, ids = getattr(cls, "name", None), getattr(cls, "codec_ids", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{field}: {path!r} needs a class attribute name (a non-empty string)")
    if not (isinstance(ids, tuple) and ids and all(type(i) is int for i in ids)):
        raise ConfigError(f"{field}: {path!r} needs a class attribute codec_ids, a non-empty "
                          f"tuple of ints, got {ids!r}")
    for cid in ids:
        if cid not in USER_CODEC_IDS:
            raise ConfigError(f"{field}: {path!r} has codec id {cid}; a user codec's ids must be "
                              f"in {USER_CODEC_IDS.start}-{USER_CODEC_IDS.stop - 1} (the package's "
                              f"codecs use 0-127)")
        other = base._DECODERS.get(cid)
        if other is not None and other is not cls:
            raise ConfigError(f"{field}: {path!r} has codec id {cid}, already taken by "
                              f"{other.__module__}.{other.__qualname__}")
    base.register_decoder(cls)
    for cid in ids:
        CODEC_NAMES[cid] = name
    return cls


def _user_codec(cfg: CompressionConfig, common: dict) -> Compressor:
    cls = load_user_codec(cfg.uplink)
    build = getattr(cls, "from_config", None)
    try:
        codec = build(cfg, **common) if build is not None else cls(**common)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"compression.uplink: building {cfg.uplink!r} failed: "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(codec, cls):
        raise ConfigError(f"compression.uplink: {cfg.uplink!r}.from_config returned "
                          f"{type(codec).__name__}, not an instance of the class")
    return codec
