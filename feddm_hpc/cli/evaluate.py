"""`feddm-hpc evaluate CHECKPOINT`: score a checkpoint's EMA model, print one JSON object and
write it to RUN_DIR/eval/round-NNNNNN.json. Runs on one rank or split over `mpiexec` ranks.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

from feddm_hpc.cli.args import add_set
from feddm_hpc.cli.world import make_comm
from feddm_hpc.comm import root_decides
from feddm_hpc.errors import ConfigError, UserError

MIN_SAMPLES = 6  # precision/recall/density/coverage need more than k = 5 samples per set


def register(sub) -> None:
    e = sub.add_parser("evaluate", help="score a checkpoint's EMA samples (FD/KID/PRDC) as JSON")
    e.add_argument("checkpoint")
    e.add_argument("--num-samples", type=int, default=1000, metavar="N",
                   help="generated images, scored against a fixed seeded subset of N images of "
                        "the full training split (default 1000); compare runs at equal N only")
    e.add_argument("--sampler", choices=("ddim", "ddpm"), default=None)
    e.add_argument("--steps", type=int, default=None)
    e.add_argument("--eta", type=float, default=None, help="ddim noise in [0, 1] (default: the config's)")
    e.add_argument("--seed", type=int, default=None, help="sampling seed (default: the config's)")
    e.add_argument("--inception-weights", default=None, metavar="FILE",
                   help="Inception-v3 state dict (pytorch-fid or torchvision) for the standard "
                        "FID as well (slow on CPU: ~0.3 s per image and thread)")
    e.add_argument("--out", default=None, metavar="FILE.json",
                   help="default RUN_DIR/eval/round-NNNNNN.json")
    e.add_argument("--save-samples", default=None, metavar="FILE.npz",
                   help="also write the generated images (uint8, key `images`)")
    e.add_argument("--device", default=None, help="default: the config's system.device")
    e.add_argument("--extractor-epochs", type=int, default=None, metavar="E",
                   help="feature-extractor training epochs (default: 2 for the LeNet of grey "
                        "images, 8 for the colour network)")
    e.add_argument("--extractor-train-subset", type=int, default=None, metavar="M",
                   help="train the extractor on the first M training images only (quick checks)")
    e.add_argument("--no-memorization", action="store_true",
                   help="skip the memorization audit (nearest training images of every sample, "
                        "near copies per client; docs/evaluation.md)")
    add_set(e)
    e.set_defaults(run=cmd_evaluate)


def _check_flags(args, config) -> None:
    d = config.diffusion
    if args.num_samples < MIN_SAMPLES:
        raise UserError(f"--num-samples: must be >= {MIN_SAMPLES} (PRDC uses k = 5 neighbours)")
    if args.steps is not None and not 1 <= args.steps <= d.timesteps:
        raise UserError(f"--steps: must be between 1 and {d.timesteps}")
    if args.eta is not None and not 0.0 <= args.eta <= 1.0:
        raise UserError("--eta: must be in [0, 1]")
    if args.extractor_epochs is not None and args.extractor_epochs < 1:
        raise UserError("--extractor-epochs: must be >= 1")
    if args.extractor_train_subset is not None and args.extractor_train_subset < 100:
        raise UserError("--extractor-train-subset: must be >= 100")


def _test_reference(config, train_images, n: int, notes: list):
    """A seeded subset of n images of the test split (the genuinely-new baseline), or None with a
    note when the dataset has no test split of the training images' shape."""
    import numpy as np

    from feddm_hpc.data import load_configured
    from feddm_hpc.errors import DataError
    from feddm_hpc.evaluation.features import reference_indices
    from feddm_hpc.evaluation.reference import REFERENCE_SEED

    try:
        test = load_configured(config.data, "test")
    except DataError as exc:
        notes.append(f"no test-split reference: {exc}")
        return None
    if test.image_shape != tuple(np.asarray(train_images).shape[1:]):
        notes.append(f"no test-split reference: its images are {test.image_shape}, the training "
                     f"images {tuple(train_images.shape[1:])}")
        return None
    return test.images[reference_indices(len(test), min(n, len(test)), REFERENCE_SEED)]


def memorization_audit(config, samples_u8, extractor, plot_path: Path) -> dict:
    """Root only: the memorization audit of the generated samples against every image the run
    trained on (the training split, data.subset applied), attributed to clients through the
    run's partition (rebuilt from the config: partition.json holds sizes, not indices). Writes
    the histogram to `plot_path`, logs one line on stderr, returns the JSON-able summary."""
    import time

    from feddm_hpc.evaluation.memorization import (
        audit_memorization,
        cached_train_features,
        plot_nearest_distances,
    )
    from feddm_hpc.federation.setup import load_partitioned

    t0 = time.perf_counter()
    notes = []
    try:
        dataset, parts = load_partitioned(config)
    except ConfigError as exc:  # a --set made the partition impossible: audit without clients
        from feddm_hpc.data import load_configured

        d = config.data
        dataset, parts = load_configured(d, "train", subset=d.subset, seed=config.seed), None
        notes.append(f"no per-client attribution: {exc}")
    if config.data.subset is not None:
        notes.append(f"training set: the run's data.subset of {len(dataset)} images; indices "
                     f"are into that subset")
    reference = _test_reference(config, dataset.images, len(samples_u8), notes)
    feats = None if extractor is None else \
        cached_train_features(extractor, dataset.images, dataset.checksum)
    if extractor is None:
        notes.append("no feature extractor (unlabelled data): pixel space only")
    audit = audit_memorization(samples_u8, dataset.images, extractor=extractor,
                               reference_images=reference, parts=parts, train_features=feats)
    audit.notes.extend(notes)
    out = audit.summary()
    # No plot path or timing in the result: it must not depend on --out or on the rank count.
    try:
        plot = plot_nearest_distances(audit, plot_path)
    except ImportError:
        plot = "no plot (matplotlib is not installed)"
    print(f"[feddm_hpc] memorization: {out['near_copy_fraction']['pixel']:.1%} of samples are "
          f"near copies in pixel space (k={out['k']}, ratio < {out['threshold']:.3g}; "
          f"{time.perf_counter() - t0:.1f} s) -> {plot}", file=sys.stderr, flush=True)
    return out


def partial_sharing_inputs(comm, config, model, data) -> dict:
    """evaluate_params' inputs for a partially shared run's checkpoint (its clients' models,
    shards and label histograms); {} for a run with one model."""
    from feddm_hpc.config import shares_partly
    from feddm_hpc.data import label_histograms
    from feddm_hpc.federation.setup import load_partitioned
    from feddm_hpc.federation.shared_space import SharedSpace, client_models
    from feddm_hpc.params import ParamSpec

    if not shares_partly(config):
        return {}
    space = SharedSpace(ParamSpec.from_model(model), config.federation.shared_parts)
    models = client_models(space, data.ema, data.clients, config.federation.num_clients)
    parts, hist = None, None
    if comm.rank == 0:   # the shards are a pure function of the config (setup.py)
        dataset, parts = load_partitioned(config)
        if dataset.labels is not None:
            hist = label_histograms(dataset.labels, parts, dataset.num_classes)
    return dict(client_params=models, client_indices=parts, label_histogram=hist)


def cmd_evaluate(args) -> int:
    result = evaluate_checkpoint(make_comm(), args)
    if result is not None:
        print(json.dumps(result), flush=True)
    return 0


def evaluate_checkpoint(comm, args, verbose: bool = True) -> Optional[dict]:
    """Collective: scores the checkpoint as the flags in `args` (this command's parser) say,
    writes the JSON file and returns the result on the root (None on the other ranks)."""
    import numpy as np

    from feddm_hpc.config import config_from_yaml_text
    from feddm_hpc.evaluation.evaluate import evaluate_params
    from feddm_hpc.evaluation.generation import to_uint8_nhwc
    from feddm_hpc.evaluation.per_client import client_histogram_distances, read_label_histogram
    from feddm_hpc.evaluation.results import eval_json_path, write_result
    from feddm_hpc.evaluation.scores import FID_UNAVAILABLE
    from feddm_hpc.federation.setup import build_model, prepare_device
    from feddm_hpc.params import ParamSpec
    from feddm_hpc.rundir.checkpoint import load_checkpoint

    ckpt_path = Path(args.checkpoint)

    def verify():  # the checksum pass reads every byte: the root does it once for all ranks
        load_checkpoint(ckpt_path)
    root_decides(comm, verify)
    data = load_checkpoint(ckpt_path, verify=False)
    config = config_from_yaml_text(data.config_yaml, args.overrides)
    _check_flags(args, config)
    device, _ = prepare_device(config, comm, device=args.device)
    model = build_model(config, data.image_shape, device)
    if ParamSpec.from_model(model).fingerprint() != data.param_fingerprint:
        raise ConfigError("model: --set changed the model's shape; the checkpoint's parameters do "
                          "not fit it (leave model.* as the checkpoint has it)")

    loaded = {}
    if args.inception_weights:
        from feddm_hpc.evaluation.inception import load_inception

        def read_weights():  # only the root scores; a bad file still ends every rank cleanly
            loaded["inception"] = load_inception(args.inception_weights)
        root_decides(comm, read_weights)
    elif comm.rank == 0:
        grey = not data.image_shape or data.image_shape[0] == 1   # (C, H, W); () in old files
        features = "LeNet" if grey else "colour-network"
        print(f"note: {FID_UNAVAILABLE}; reporting FD/KID/PRDC in {features} features",
              file=sys.stderr, flush=True)

    mixture = partial_sharing_inputs(comm, config, model, data)
    result = evaluate_params(comm, config, data.ema, data.image_shape, data.round,
                             args.num_samples, model=model, device=device, sampler=args.sampler,
                             **mixture,
                             steps=args.steps, eta=args.eta, seed=args.seed,
                             inception=loaded.get("inception"),
                             extractor_epochs=args.extractor_epochs,
                             extractor_max_train=args.extractor_train_subset, verbose=verbose,
                             return_samples=True)
    if comm.rank != 0:
        return None
    samples = result.pop("_samples")
    result["checkpoint"] = str(ckpt_path)
    hist = read_label_histogram(ckpt_path.parent.parent) \
        if ckpt_path.parent.name == "checkpoints" else None
    if hist is not None and result.get("class_histogram") is not None:
        per = client_histogram_distances(result["class_histogram"], hist)
        result["client_class_histogram_distance"] = per
    out = Path(args.out) if args.out else eval_json_path(ckpt_path)
    if not args.no_memorization:
        from feddm_hpc.data import image_options
        from feddm_hpc.evaluation.reference import load_reference

        # The same key as evaluate_params' call: the process cache returns its extractor.
        ref = load_reference(config.data.dataset, config.data.path,
                             need_extractor=loaded.get("inception") is None,
                             epochs=args.extractor_epochs, max_train=args.extractor_train_subset,
                             options=image_options(config.data))
        result["memorization"] = memorization_audit(
            config, to_uint8_nhwc(samples), ref.extractor,
            out.with_name(f"{out.stem}.memorization.png"))
    write_result(out, result)
    if args.save_samples:
        path = Path(args.save_samples)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The npz layout of data.dataset=npz, so samples can be re-scored or trained on.
        np.savez_compressed(path, images=to_uint8_nhwc(samples))
    if verbose:
        print(f"[feddm_hpc] evaluation of round {data.round} ({result['num_samples']} samples, "
              f"{result['sampler']} {result['steps']} steps, {comm.size} rank(s)) -> {out}",
              file=sys.stderr, flush=True)
    return result
