"""Sample-quality evaluation of a global model: seeded generation over all ranks
(generation.py), then FD/KID/PRDC and class histograms against real training images on the root.

Both functions are collective: every rank must call them.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from feddm_hpc.comm import root_decides
from feddm_hpc.errors import UserError
from feddm_hpc.evaluation.generation import generate_samples
from feddm_hpc.evaluation.mixture import generate_mixture, per_client_scores
from feddm_hpc.evaluation.results import run_eval_path, write_result
from feddm_hpc.evaluation.scores import score_samples


def evaluate_params(comm, config, params: np.ndarray, image_shape, round_index: int,
                    num_samples: int, *, model=None, schedule=None, device: str = "cpu",
                    sampler: Optional[str] = None, steps: Optional[int] = None,
                    eta: Optional[float] = None, seed: Optional[int] = None,
                    inception=None, cache_dir=None, extractor_epochs: Optional[int] = None,
                    extractor_max_train: Optional[int] = None, verbose: bool = False,
                    return_samples: bool = False, client_params=None, client_indices=None,
                    label_histogram=None) -> Optional[dict]:
    """Collective: sample `num_samples` images from `params` on all ranks, score them on the root.

    A partially shared run passes `client_params` (client id -> flat model vector, the root's
    values count) instead: the samples are the mixture of the clients' models (mixture.py),
    scored as a whole, and each client's share against its own images (`client_indices`, root)
    under "mixture". `params` is then unused.

    `model`/`schedule` default to fresh ones built from `config` (pass the simulation's own to
    save memory; `params` is loaded into `model`). sampler/steps/eta/seed default to the config's
    sampling section and seed. Returns the metrics dict on the root (None elsewhere), with the
    float32 images under "_samples" when `return_samples` (`write_result` leaves "_" keys out).
    A dataset without labels and no `inception` is a UserError on every rank, raised before any
    sampling; so is a missing dataset.
    """
    from feddm_hpc.data import image_options
    from feddm_hpc.diffusion.schedule import make_schedule
    from feddm_hpc.evaluation.reference import load_reference
    from feddm_hpc.federation.setup import build_model

    d, s = config.diffusion, config.sampling
    sampler, steps = sampler or s.sampler, steps or s.steps
    eta = s.eta if eta is None else eta
    seed = config.seed if seed is None else seed

    def reference():
        return load_reference(config.data.dataset, config.data.path,
                              need_extractor=inception is None, cache_dir=cache_dir,
                              epochs=extractor_epochs, max_train=extractor_max_train,
                              verbose=verbose, options=image_options(config.data))

    def check():
        ref = reference()
        if num_samples > len(ref.images):
            raise UserError(f"--num-samples/evaluation.num_samples: {num_samples} exceeds the "
                            f"{len(ref.images)} real training images of {ref.dataset}")
        c, h, w = image_shape
        if tuple(ref.images.shape[1:]) != (h, w, c):
            raise UserError(f"data.path: the model makes {h}x{w}x{c} images, but {ref.dataset}'s "
                            f"training images are {'x'.join(map(str, ref.images.shape[1:]))}; "
                            f"evaluate against the data the run trained on")
    root_decides(comm, check)   # a missing dataset or unlabelled data fails before sampling
    if model is None:
        model = build_model(config, image_shape, device)
    if schedule is None:
        schedule = make_schedule(d.schedule, d.timesteps, d.beta_start, d.beta_end).to(device)
    t0 = time.perf_counter()
    if client_params is None:
        fake = generate_samples(comm, model, schedule, params, image_shape, num_samples, sampler,
                                steps, eta, seed, round_index, device, prediction=d.prediction)
    else:
        fake, owners = generate_mixture(comm, model, schedule, client_params, image_shape,
                                        num_samples, sampler, steps, eta, seed, round_index,
                                        device, prediction=d.prediction)
    if comm.rank != 0:
        return None
    t1 = time.perf_counter()
    result = score_samples(fake, reference(), num_samples, inception, cache_dir)
    if client_params is not None:
        result["mixture"] = per_client_scores(fake, owners, reference(), client_indices,
                                              label_histogram, seed=seed)
    result.update(round=int(round_index), sampler=sampler,
                  steps=int(steps if sampler == "ddim" else d.timesteps), eta=float(eta),
                  seed=int(seed), ranks=comm.size, sample_s=round(t1 - t0, 3),
                  score_s=round(time.perf_counter() - t1, 3))
    if return_samples:
        result["_samples"] = fake
    return result


def evaluate_run(view, round_index: int, num_samples: int, **kwargs) -> Optional[dict]:
    """Collective, for evaluation during training: score the EMA model of a running training
    (a callbacks.RunView) with its own model instance, write RUN_DIR/eval/round-NNNNNN.json and
    log one line on the root. kwargs go to `evaluate_params` (sampler, steps, eta, seed, ...).
    The simulation's model holds the EMA weights afterwards; local training reloads the global
    vector into it before every client, so nothing else needs restoring.
    """
    s = view.setup
    kwargs.setdefault("verbose", True)   # say so when the first call trains the extractor
    if view.client_models is not None:   # partial sharing: the mixture of the clients' models
        kwargs.update(client_params=view.client_models(), client_indices=s.parts,
                      label_histogram=s.histogram)
    result = evaluate_params(view.comm, view.cfg, view.ema, s.image_shape, round_index, num_samples,
                             model=s.model, schedule=s.schedule, device=s.device, **kwargs)
    if view.comm.rank == 0:
        where = ""
        if view.run_dir is not None:
            where = f" -> {write_result(run_eval_path(view.run_dir, round_index), result)}"
        fd = result.get("fd")
        view.log.info(f"eval round {round_index}: FD {'n/a' if fd is None else f'{fd:.2f}'} "
                     f"(N={num_samples}, {result['sample_s'] + result['score_s']:.1f}s){where}")
    return result
