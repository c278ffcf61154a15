"""Uplink compression of client updates: Compressor.encode(vector) -> uint8 payload, decode back.

    comp = make_compressor(cfg.compression)
    payload = comp.encode(update, client_id, rng)      # rng seeded from (seed, round, client_id)
    update_hat = comp.decode(payload, num_params)      # or decode_payload(payload, num_params)

Payloads are self-describing (header.py); per-client error-feedback residuals are exposed by
state_dict()/load_state_dict() as {"residual/<client_id>": float32 array}.
"""

from feddm_hpc.compression.base import Compressor, decode_payload, payload_bytes_float32
from feddm_hpc.compression.codecs import Float16Compressor, IdentityCompressor, QuantCompressor
from feddm_hpc.compression.header import HEADER_SIZE
from feddm_hpc.compression.lossless import zstd_available
from feddm_hpc.compression.registry import COMPRESSORS, make_compressor
from feddm_hpc.compression.topk import TopKCompressor

__all__ = [
    "COMPRESSORS", "Compressor", "Float16Compressor", "HEADER_SIZE", "IdentityCompressor",
    "QuantCompressor", "TopKCompressor", "decode_payload", "make_compressor",
    "payload_bytes_float32", "zstd_available",
]
