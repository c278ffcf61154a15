"""The protocols a user's extension implements, in one public module (docs/extending.md).

A config field that names a registry entry also takes a user's class by import path,
`package.module:Name`, imported with importlib on every rank (never eval) where the object is
built, so `feddm-hpc validate` and train start-up both check it (exit 2 naming the field when the
module is missing, the name is absent or the class does not meet its protocol):

    compression.uplink=pkg.mod:MyCodec       a Compressor subclass (below)
    federation.algorithm=pkg.mod:MyStrategy  a Strategy subclass (below)
    data.dataset=pkg.mod:load_mine           a DatasetLoader function (below)
    model.name=pkg.mod:MyDenoiser            a torch.nn.Module subclass, the Denoiser protocol
    logging.callbacks=[pkg.mod:MyCallback]   RoundCallback subclasses (below)

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

Dataset protocol -- a function `loader(path, split) -> (images, labels, num_classes)`, the
built-in loaders' interface (DatasetLoader below): path is data.path (None when unset), split
"train" or "test"; images [N,H,W] or [N,H,W,C] uint8 (or float in [0, 1]), labels non-negative
ints [N] or None, num_classes an int or None. Called on every rank: it must return the same
arrays every time. Raise DataError (exit 2) for missing files; any other exception is reported
as a DataError naming data.dataset. data.subset, the partition and evaluation apply as to a
built-in dataset.

Model protocol -- a torch.nn.Module subclass built as Name(image_channels=, image_size=,
**model.options) under the run's initialisation seed, whose forward(x [B,C,H,W] float32,
t [B] int64) returns a tensor of x's shape (Denoiser below); float32 parameters, no running
statistics (BatchNorm): federation moves the parameters only. Checked with one forward pass
of two blank images when built. model.parameterization must be dense.

Callback protocol -- a RoundCallback subclass, built with no arguments on every rank, that
overrides `after_round(view, round_index, record) -> bool` (record: the round's metrics line on
the root, None elsewhere; True asks the run to stop, and every rank must answer alike) and/or
`at_end(view)`; `view` is a RunView (config, communicator, run directory, read-only global and
EMA vectors). They run after the built-in callbacks, in list order.

Examples: examples/sign_codec.py, examples/nesterov_strategy.py, examples/pixel_csv_dataset.py,
examples/round_csv_log.py.
"""
from typing import Optional, Protocol, Tuple

import numpy as np

from feddm_hpc.compression.base import Compressor, decode_payload, finite_range
from feddm_hpc.compression.header import HEADER_SIZE, Header
from feddm_hpc.compression.registry import USER_CODEC_IDS, load_user_codec
from feddm_hpc.errors import ConfigError, DataError
from feddm_hpc.federation.callbacks import RoundCallback, RunView
from feddm_hpc.plugins import load_class
from feddm_hpc.strategies import load_user_strategy
from feddm_hpc.strategies.base import ClientState, Strategy
from feddm_hpc.strategies.terms import GradientTerm


class DatasetLoader(Protocol):
    """data.dataset=pkg.mod:Name: what a user's loader function looks like."""

    def __call__(self, path: Optional[str], split: str
                 ) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[int]]: ...


class Denoiser(Protocol):
    """model.name=pkg.mod:Name: what a user's torch.nn.Module looks like (besides being one)."""

    def __init__(self, *, image_channels: int, image_size: int, **options) -> None: ...

    def forward(self, x, t): ...

__all__ = ["ClientState", "Compressor", "ConfigError", "DataError", "DatasetLoader", "Denoiser",
           "GradientTerm", "HEADER_SIZE", "Header", "RoundCallback", "RunView", "Strategy",
           "USER_CODEC_IDS", "decode_payload", "finite_range", "load_class", "load_user_codec",
           "load_user_strategy"]
