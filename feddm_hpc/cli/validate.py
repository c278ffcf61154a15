"""`feddm-hpc validate CONFIG`: check a config and load (and partition) its data, without training.
Every extension named by import path is imported and checked as train start-up does."""
from __future__ import annotations

from feddm_hpc.cli.args import add_set
from feddm_hpc.cli.exits import EXIT_OK


def register(sub) -> None:
    v = sub.add_parser("validate", help="check a config (and its data) without training")
    v.add_argument("config")
    add_set(v)
    v.set_defaults(run=cmd_validate)


def cmd_validate(args) -> int:
    from feddm_hpc.compression import make_compressor
    from feddm_hpc.config import load_config
    from feddm_hpc.federation.callbacks import user_callbacks
    from feddm_hpc.federation.setup import build_model, load_partitioned, sharing_of
    from feddm_hpc.plugins import is_import_path
    from feddm_hpc.strategies import load_user_strategy, make_strategy

    config = load_config(args.config, args.overrides)
    # The uplink codec first: built as at start-up, so an import path (a user's codec) is
    # imported and checked against its protocol before any data is read.
    make_compressor(config.compression)
    if is_import_path(config.federation.algorithm):
        load_user_strategy(config.federation.algorithm)   # before the data, like the codec
    user_callbacks(config.logging.callbacks)
    d = config.data
    ds, parts = load_partitioned(config)
    sizes = [p.size for p in parts]
    h, w, c = ds.image_shape
    model = build_model(config, (c, h, w), "cpu")   # the rank knob's checks need the layer shapes
    size = sharing_of(config, model)
    # The strategy as the simulation builds it (a user's import path is imported and checked).
    make_strategy(config.federation.algorithm, config.server, size.shared, run_config=config)
    print(f"ok: {args.config}: {len(ds)} {d.dataset} images, {config.federation.num_clients} clients "
          f"({min(sizes)}-{max(sizes)} samples each), {config.federation.rounds} rounds, "
          f"algorithm {config.federation.algorithm}, uplink {config.compression.uplink}")
    print(f"model: {size.describe()}")
    return EXIT_OK
