"""Files of a run directory besides metrics and checkpoints: config.yaml, partition.json, samples/."""
from __future__ import annotations

import json
from pathlib import Path

from feddm_hpc.diffusion.grids import draw_samples
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


def save_sample_grid(view, round_index: int) -> None:
    """RUN_DIR/samples/round-NNNNNN.png: a grid of EMA samples, drawn on the root only."""
    if view.comm.rank != 0 or view.cfg.sampling.num_samples == 0:
        return
    cfg, s = view.cfg, view.setup
    images = draw_samples(s.model, s.schedule, view.ema, s.image_shape, cfg.sampling.num_samples,
                          cfg.sampling.sampler, cfg.sampling.steps, cfg.seed, round_index, s.device,
                          eta=cfg.sampling.eta, prediction=cfg.diffusion.prediction)
    path = view.run_dir / "samples" / f"round-{round_index:06d}.png"
    save_image_grid(images, path)
    view.log.info(f"samples: {path}")
