"""Sample-quality evaluation of a global model: seeded generation split over MPI ranks, then
FD/KID/PRDC and class histograms against real training images on the root.

Generation is rank-count invariant: the N samples are cut into fixed blocks of BLOCK indices;
block b is drawn with its own generator seeded from (seed, round, b) (seeding.SAMPLE stream,
slot 1 + b; slot 0 is the training-time sample grid), blocks are dealt round-robin to ranks, and
the root reassembles them in index order. Each block is one forward batch of the same size on
every rank count, so with equal threads per rank the images are bit-identical. Noise is always
drawn on the CPU, so a GPU run starts from the same x_T as a CPU run. Sample i of an N-sample
run equals sample i of any larger run whenever i lies in a full block.

Collective functions (`generate_samples`, `evaluate_params`, `evaluate_run`) must be
called by every rank.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch

from feddm_hpc import seeding
from feddm_hpc.comm import root_decides
from feddm_hpc.diffusion import sample
from feddm_hpc.errors import UserError
from feddm_hpc.params import unflatten_into

BLOCK = 64
FID_UNAVAILABLE = ("standard FID (Inception-v3) not computed: its weights cannot be downloaded "
                   "here; pass --inception-weights FILE (pytorch-fid's pt_inception-2015-12-05 "
                   "or torchvision's inception_v3_google state dict)")


def block_seed(seed: int, round_index: int, block: int) -> int:
    return seeding.seed_for(seed, seeding.SAMPLE, round_index, 1 + block)


def _blocks(num: int, block_size: int):
    return [(b, b * block_size, min(block_size, num - b * block_size))
            for b in range(math.ceil(num / block_size))]


def generate_samples(comm, model, schedule, params: np.ndarray, image_shape, num: int,
                     sampler: str, steps: int, eta: float, seed: int, round_index: int,
                     device: str, block_size: int = BLOCK,
                     prediction: str = "eps") -> Optional[np.ndarray]:
    """Collective. Draws `num` samples of the model with the root's weights `params` (broadcast
    first: in a running simulation only the root holds the current EMA); they are loaded into
    `model`, so callers that keep their own weights in it reload them afterwards.

    Returns float32 [num, C, H, W] in [-1, 1] on the root, None on the other ranks.
    """
    weights = np.array(params, dtype=np.float32)   # a copy: the caller's array stays as it was
    comm.bcast_array(weights)
    unflatten_into(weights, model)
    blocks = _blocks(num, block_size)
    mine = []
    for b, start, n in blocks[comm.rank::comm.size]:
        gen = torch.Generator(device="cpu").manual_seed(block_seed(seed, round_index, b))
        x = sample(model, schedule, (n, *image_shape), sampler, steps, gen, device, eta,
                   prediction=prediction)
        mine.append(x.detach().to("cpu", torch.float32).numpy().reshape(-1))
    local = np.concatenate(mine) if mine else np.empty(0, dtype=np.float32)
    parts = comm.gather_bytes(local.view(np.uint8))
    if comm.rank != 0:
        return None
    out = np.empty((num, *image_shape), dtype=np.float32)
    per_image = int(np.prod(image_shape))
    for rank, part in enumerate(parts):
        values = np.frombuffer(part.tobytes(), dtype=np.float32)
        offset = 0
        for b, start, n in blocks[rank::comm.size]:
            out[start:start + n] = values[offset:offset + n * per_image].reshape(n, *image_shape)
            offset += n * per_image
    return out


def to_uint8_nhwc(images: np.ndarray) -> np.ndarray:
    """float [N,C,H,W] in [-1,1] -> uint8 [N,H,W,C], as the images would be saved as PNG
    (NaN from a diverged model becomes mid-grey instead of failing the evaluation)."""
    from feddm_hpc.rundir.imaging import to_uint8

    return np.ascontiguousarray(to_uint8(images).transpose(0, 2, 3, 1))


# ---------------------------------------------------------------------------- root-side scoring

def _inception_fid(inception, real_u8: np.ndarray, fake_u8: np.ndarray, dataset_checksum: str,
                   cache_dir) -> float:
    """Standard FID; the real statistics are cached per (weights file, real image set)."""
    from feddm_hpc.metrics.features import default_cache_dir
    from feddm_hpc.metrics.quality import feature_stats, frechet_distance

    h = hashlib.sha256(inception.path.read_bytes()).hexdigest()[:16]
    r = hashlib.sha256(np.ascontiguousarray(real_u8).data).hexdigest()[:16]
    cache = Path(cache_dir or default_cache_dir()) / f"inception-{h}-{dataset_checksum[:8]}-{r}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            mu_r, s_r = z["mu"], z["sigma"]
    else:
        mu_r, s_r = feature_stats(inception.features(real_u8))
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, mu=mu_r, sigma=s_r)
        tmp.replace(cache)
    return frechet_distance(mu_r, s_r, *feature_stats(inception.features(fake_u8)))


def score_samples(fake: np.ndarray, reference, num_samples: int, inception=None,
                  cache_dir=None) -> dict:
    """Root only: metrics of float [N,C,H,W] samples against N seeded real training images."""
    from feddm_hpc.metrics.evaluate import evaluate_samples
    from feddm_hpc.metrics.features import reference_indices
    from feddm_hpc.metrics.reference import REFERENCE_SEED

    fake_u8 = to_uint8_nhwc(fake)
    real_u8 = reference.images[reference_indices(len(reference.images), num_samples,
                                                 REFERENCE_SEED)]
    if reference.extractor is not None:
        result = evaluate_samples(fake_u8, real_u8, reference.extractor, reference.num_classes,
                                  seed=REFERENCE_SEED)
        result["feature_extractor_id"] = reference.extractor.path.stem
    else:
        result = {k: None for k in ("fd", "kid", "kid_std", "precision", "recall", "density",
                                    "coverage", "class_histogram", "class_histogram_distance",
                                    "feature_extractor", "feature_extractor_id",
                                    "extractor_test_accuracy")}
        result["num_samples"] = num_samples
    result["reference_seed"] = REFERENCE_SEED
    result["dataset"] = reference.dataset
    if inception is None:
        result.update(fid_inception=None, note=FID_UNAVAILABLE)
    else:
        result["fid_inception"] = _inception_fid(inception, real_u8, fake_u8, reference.checksum,
                                                 cache_dir)
        result["inception_weights"] = f"{inception.path.name} ({inception.variant})"
        if inception.variant != "pytorch-fid":
            result["note"] = ("fid_inception uses torchvision's ImageNet Inception weights: not "
                              "comparable with published FIDs (those use pytorch-fid/TF weights)")
    return result


def evaluate_params(comm, config, params: np.ndarray, image_shape, round_index: int,
                    num_samples: int, *, model=None, schedule=None, device: str = "cpu",
                    sampler: Optional[str] = None, steps: Optional[int] = None,
                    eta: Optional[float] = None, seed: Optional[int] = None,
                    inception=None, cache_dir=None, extractor_epochs: int = 2,
                    extractor_max_train: Optional[int] = None, verbose: bool = False,
                    return_samples: bool = False) -> Optional[dict]:
    """Collective: sample `num_samples` images from `params` on all ranks, score them on the root.

    `model`/`schedule` default to fresh ones built from `config` (pass the simulation's own to
    save memory; `params` is loaded into `model`). sampler/steps/eta/seed default to the config's
    sampling section and seed. Returns the metrics dict on the root (None elsewhere), with the
    float32 images under "_samples" when `return_samples` (`write_result` leaves "_" keys out).
    A dataset without labels and no `inception` is a UserError on every rank, raised before any
    sampling; so is a missing dataset.
    """
    from feddm_hpc.diffusion import make_schedule
    from feddm_hpc.federation.setup import build_model
    from feddm_hpc.metrics.reference import load_reference

    d, s = config.diffusion, config.sampling
    sampler, steps = sampler or s.sampler, steps or s.steps
    eta = s.eta if eta is None else eta
    seed = config.seed if seed is None else seed

    def reference():
        return load_reference(config.data.dataset, config.data.path,
                              need_extractor=inception is None, cache_dir=cache_dir,
                              epochs=extractor_epochs, max_train=extractor_max_train,
                              verbose=verbose)

    def check():
        ref = reference()
        if num_samples > len(ref.images):
            raise UserError(f"--num-samples/evaluation.num_samples: {num_samples} exceeds the "
                            f"{len(ref.images)} real training images of {ref.dataset}")
    root_decides(comm, check)   # a missing dataset or unlabelled data fails before sampling
    if model is None:
        model = build_model(config, image_shape, device)
    if schedule is None:
        schedule = make_schedule(d.schedule, d.timesteps, d.beta_start, d.beta_end).to(device)
    t0 = time.perf_counter()
    fake = generate_samples(comm, model, schedule, params, image_shape, num_samples, sampler,
                            steps, eta, seed, round_index, device, prediction=d.prediction)
    if comm.rank != 0:
        return None
    t1 = time.perf_counter()
    result = score_samples(fake, reference(), num_samples, inception, cache_dir)
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


# ---------------------------------------------------------------------------- per client

def client_histogram_distances(fake_histogram, label_histogram) -> list:
    """Total-variation distance between one class histogram of generated samples and each
    client's own label distribution (rows of partition.json's `label_histogram`)."""
    from feddm_hpc.metrics.quality import histogram_distance

    return [histogram_distance(fake_histogram, row) if np.sum(row) > 0 else None
            for row in np.asarray(label_histogram, dtype=np.float64)]


def evaluate_per_client(fake_images: Union[np.ndarray, Mapping[int, np.ndarray]], extractor,
                        label_histogram: Sequence[Sequence[int]]) -> dict:
    """Class-histogram distance of generated samples to each client's label distribution.

    `fake_images`: one array (samples of the global model, compared with every client) or a
    mapping client id -> that client's own samples (personalized models). Images are uint8
    [N,H,W,C] or float [N,C,H,W] in [-1,1]. The fake histogram is the extractor's predictions
    (its test error biases it slightly); the client side is the true label counts.
    """
    from feddm_hpc.metrics.quality import class_histogram, histogram_distance

    hist = np.asarray(label_histogram, dtype=np.float64)
    k = hist.shape[1]
    if isinstance(fake_images, Mapping):
        per, fake_hists = [], {}
        for cid, imgs in sorted(fake_images.items()):
            h = class_histogram(extractor.predict(imgs), k)
            fake_hists[int(cid)] = h.tolist()
            per.append(histogram_distance(h, hist[cid]) if hist[cid].sum() > 0 else None)
        clients = [int(c) for c in sorted(fake_images)]
        out = {"clients": clients, "class_histograms": fake_hists}
    else:
        h = class_histogram(extractor.predict(fake_images), k)
        per = client_histogram_distances(h, hist)
        clients = list(range(hist.shape[0]))
        out = {"clients": clients, "class_histogram": h.tolist()}
    valid = [v for v in per if v is not None]
    out.update(client_class_histogram_distance=per,
               mean_client_distance=float(np.mean(valid)) if valid else None,
               max_client_distance=float(np.max(valid)) if valid else None)
    return out


def read_label_histogram(run_dir) -> Optional[list]:
    """partition.json's per-client label counts, or None (unlabelled data or no file)."""
    path = Path(run_dir) / "partition.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("label_histogram")


# ---------------------------------------------------------------------------- files

def eval_json_path(checkpoint) -> Path:
    """RUN_DIR/eval/round-NNNNNN.json for a checkpoint inside RUN_DIR/checkpoints/, else
    `<checkpoint>.eval.json` next to it."""
    ckpt = Path(checkpoint)
    run_dir = ckpt.parent.parent
    if ckpt.parent.name == "checkpoints" and ((run_dir / "config.yaml").is_file()
                                            or (run_dir / "metrics.jsonl").is_file()):
        return run_dir / "eval" / (ckpt.stem + ".json")
    return ckpt.with_name(ckpt.name + ".eval.json") if ckpt.suffix != ".h5" \
        else ckpt.with_suffix(".eval.json")


def run_eval_path(run_dir, round_index: int) -> Path:
    """Where evaluation during training writes its result for a round."""
    return Path(run_dir) / "eval" / f"round-{round_index:06d}.json"


def write_result(path, result: dict) -> Path:
    """Write a metrics dict (JSON-able entries only) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({k: v for k, v in result.items() if not k.startswith("_")},
                              indent=1) + "\n")
    tmp.replace(path)
    return path
