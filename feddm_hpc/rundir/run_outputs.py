"""Files of a run directory besides metrics and checkpoints: config.yaml, partition.json, samples/."""
from __future__ import annotations

import json
from pathlib import Path

from feddm_hpc.diffusion.grids import draw_client_samples, draw_samples
from feddm_hpc.rundir.imaging import save_image_grid


def write_run_files(run_dir: Path, config_yaml: str, setup) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_yaml)
    info = {
        "dataset": setup.dataset_name,
        "dataset_checksum": setup.dataset_checksum,
        "client_sizes": [int(p.size) for p in setup.parts],
        "ranks": {str(r): clients for r, clients in enumerate(setup.hosted)},
        "label_histogram": setup.histogram.tolist() if setup.histogram is not None else None,
    }
    (run_dir / "partition.json").write_text(json.dumps(info, indent=1))


GRID_CLIENTS = 8   # a partially shared run's grid shows its first clients' models


def save_sample_grid(view, round_index: int, client_models=None) -> None:
    """RUN_DIR/samples/round-NNNNNN.png: a grid of EMA samples, drawn on the root only. Partial
    sharing (`client_models`: every client's vector): the samples are split over the first
    GRID_CLIENTS clients' models, in client order."""
    if view.comm.rank != 0 or view.cfg.sampling.num_samples == 0:
        return
    cfg, s = view.cfg, view.setup
    n = cfg.sampling.num_samples
    common = dict(eta=cfg.sampling.eta, prediction=cfg.diffusion.prediction)
    path = view.run_dir / "samples" / f"round-{round_index:06d}.png"
    if client_models is None:
        images = draw_samples(s.model, s.schedule, view.ema, s.image_shape, n, cfg.sampling.sampler,
                              cfg.sampling.steps, cfg.seed, round_index, s.device, **common)
        note = ""
    else:
        shown = list(range(min(GRID_CLIENTS, len(client_models), n)))
        images = draw_client_samples(s.model, s.schedule, client_models, s.image_shape, n,
                                     cfg.sampling.sampler, cfg.sampling.steps, cfg.seed,
                                     round_index, s.device, clients=shown, **common)
        note = f" (clients {shown[0]}-{shown[-1]}, in client order)"
    save_image_grid(images, path)
    view.log.info(f"samples: {path}{note}")
