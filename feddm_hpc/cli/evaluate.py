"""`feddm-hpc evaluate CHECKPOINT`: score a checkpoint's EMA model, print one JSON object and
write it to RUN_DIR/eval/round-NNNNNN.json. Runs on one rank or split over `mpiexec` ranks.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

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
    e.add_argument("--extractor-epochs", type=int, default=2, metavar="E",
                   help="LeNet feature-extractor training epochs (default 2)")
    e.add_argument("--extractor-train-subset", type=int, default=None, metavar="M",
                   help="train the extractor on the first M training images only (quick checks)")
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
    if args.extractor_epochs < 1:
        raise UserError("--extractor-epochs: must be >= 1")
    if args.extractor_train_subset is not None and args.extractor_train_subset < 100:
        raise UserError("--extractor-train-subset: must be >= 100")


def cmd_evaluate(args) -> int:
    return evaluate_checkpoint(make_comm(), args)


def evaluate_checkpoint(comm, args) -> int:
    import numpy as np
    import torch

    from feddm_hpc.config import config_from_yaml_text
    from feddm_hpc.evaluation.evaluate import evaluate_params
    from feddm_hpc.evaluation.generation import to_uint8_nhwc
    from feddm_hpc.evaluation.per_client import client_histogram_distances, read_label_histogram
    from feddm_hpc.evaluation.results import eval_json_path, write_result
    from feddm_hpc.evaluation.scores import FID_UNAVAILABLE
    from feddm_hpc.federation.placement import select_device, threads_per_rank
    from feddm_hpc.federation.setup import build_model
    from feddm_hpc.params import ParamSpec
    from feddm_hpc.rundir.checkpoint import load_checkpoint

    ckpt_path = Path(args.checkpoint)

    def verify():  # the checksum pass reads every byte: the root does it once for all ranks
        load_checkpoint(ckpt_path)
    root_decides(comm, verify)
    data = load_checkpoint(ckpt_path, verify=False)
    config = config_from_yaml_text(data.config_yaml, args.overrides)
    _check_flags(args, config)
    torch.set_num_threads(threads_per_rank(config.system.threads, comm.local_size))
    device = select_device(args.device or config.system.device, comm.local_rank)
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
        print(f"note: {FID_UNAVAILABLE}; reporting FD/KID/PRDC in LeNet features",
              file=sys.stderr, flush=True)

    result = evaluate_params(comm, config, data.ema, data.image_shape, data.round,
                             args.num_samples, model=model, device=device, sampler=args.sampler,
                             steps=args.steps, eta=args.eta, seed=args.seed,
                             inception=loaded.get("inception"),
                             extractor_epochs=args.extractor_epochs,
                             extractor_max_train=args.extractor_train_subset, verbose=True,
                             return_samples=True)
    if comm.rank != 0:
        return 0
    samples = result.pop("_samples")
    result["checkpoint"] = str(ckpt_path)
    hist = read_label_histogram(ckpt_path.parent.parent) \
        if ckpt_path.parent.name == "checkpoints" else None
    if hist is not None and result.get("class_histogram") is not None:
        per = client_histogram_distances(result["class_histogram"], hist)
        result["client_class_histogram_distance"] = per
    out = Path(args.out) if args.out else eval_json_path(ckpt_path)
    write_result(out, result)
    if args.save_samples:
        path = Path(args.save_samples)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The npz layout of data.dataset=npz, so samples can be re-scored or trained on.
        np.savez_compressed(path, images=to_uint8_nhwc(samples))
    print(json.dumps(result), flush=True)
    print(f"[feddm_hpc] evaluation of round {data.round} ({result['num_samples']} samples, "
          f"{result['sampler']} {result['steps']} steps, {comm.size} rank(s)) -> {out}",
          file=sys.stderr, flush=True)
    return 0
