"""The protocols a user's extension implements, in one public module (docs/extending.md).

A config field that names a registry entry also takes a user's class by import path,
`package.module:Name`, imported with importlib on every rank (never eval) where the object is
built, so `feddm-hpc validate` and train start-up both check it (exit 2 naming the field when the
module is missing, the name is absent or the class does not meet its protocol):

    compression.uplink=pkg.mod:MyCodec       a Compressor subclass (below)
    federation.algorithm=pkg.mod:MyStrategy  a Strategy subclass (below)

Codec protocol -- a concrete subclass of `Compressor` with
    name: str                        shown in logs
    codec_ids: tuple[int, ...]       ids written in the payload header, each in USER_CODEC_IDS
                                     (128-255; the package's codecs use 0-127) and not taken by
                                     another class: the id is how decode_payload finds the class
    lossy: bool = True               False: error feedback is skipped (it would store zeros)
    _encode(self, x, rng) -> payload        header + raw body (lossless byte 0) for a finite
                                            float32 vector; write it with
                                            self._new_payload(Header(codec_id, bits, n=x.size), nbytes)
    body_size(cls, header) -> int           classmethod: bytes of the raw body
    decode_body(cls, header, body, out=None) -> float32 vector    classmethod, into out if given
    from_config(cls, section, *, error_feedback, lossless_method)  optional classmethod to read
                                            the compression section; else cls(error_feedback=...,
                                            lossless_method=...) is called
The base class adds error feedback (per-client residuals, checkpointed), the lossless stage and
decoding. Decoding must depend on the header and body only.

Strategy protocol -- a concrete subclass of `Strategy` with its own `name: str`, built as
Cls(server_cfg, num_params, run_config) on every rank, overriding `apply(global, mean_update)` or
`server_step(global, aggregate)`; its `state_dict()/load_state_dict()` are checkpointed and
restored like a built-in's (a dict of numpy arrays). The client half (broadcast, gradient_terms,
upload_names/client_uploads, client_state) is optional; a strategy with per-client state
(`client_state` not None) needs system.placement: static.

Examples: examples/sign_codec.py, examples/server_nesterov.py.
"""
from feddm_hpc.compression.base import Compressor, decode_payload, finite_range
from feddm_hpc.compression.header import HEADER_SIZE, Header
from feddm_hpc.compression.registry import USER_CODEC_IDS, load_user_codec
from feddm_hpc.plugins import load_class
from feddm_hpc.strategies import load_user_strategy
from feddm_hpc.strategies.base import ClientState, Strategy
from feddm_hpc.strategies.terms import GradientTerm

__all__ = ["ClientState", "Compressor", "GradientTerm", "HEADER_SIZE", "Header", "Strategy",
           "USER_CODEC_IDS", "decode_payload", "finite_range", "load_class", "load_user_codec",
           "load_user_strategy"]
