"""`feddm-hpc evaluate CHECKPOINT`: score a checkpoint's EMA model, print one JSON object and
write it to RUN_DIR/eval/round-NNNNNN.json. Runs on one rank or split over `mpiexec` ranks.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from feddm_hpc.errors import ConfigError, UserError
from feddm_hpc.comm import root_decides
from feddm_hpc.evaluation import (FID_UNAVAILABLE, client_histogram_distances,
                         eval_json_path, evaluate_params, read_label_histogram, to_uint8_nhwc,
                         write_result)

MIN_SAMPLES = 6  # precision/recall/density/coverage need more than k = 5 samples per set


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


def run(comm, args) -> int:
    from feddm_hpc.rundir.checkpoint import load_checkpoint
    from feddm_hpc.config import config_from_yaml_text
    from feddm_hpc.federation.setup import build_model
    from feddm_hpc.params import ParamSpec
    from feddm_hpc.federation.placement import select_device, threads_per_rank

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
        from feddm_hpc.metrics.inception import load_inception

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
