"""feddm_hpc from Python: notebooks and scripts, serial or under mpiexec.

    from feddm_hpc import api

    cfg = api.load_config("configs/tiny.yaml", {"federation.rounds": 2})
    run = api.train(cfg, "runs/notebook")          # a Run: metrics, checkpoints, parameters
    print(run.metrics[-1]["train_loss"], run.latest_checkpoint)
    images = api.sample(run.latest_checkpoint, num=16)   # float32 [16, C, H, W] in [-1, 1]
    scores = api.evaluate(run.latest_checkpoint, num_samples=500)
    api.export(run.latest_checkpoint, "exported")        # model.safetensors + config.json
    model = api.load_model("exported")                   # a torch Module (also from a checkpoint)
    run = api.resume("runs/notebook", {"federation.rounds": 4})

The functions run the same code as the command line (federation/job.py, the evaluate command),
so their results are the command line's, bit for bit. In a plain Python process they run on one
rank; launched under `mpiexec -n N python script.py`, `train`, `resume` and `evaluate` are
collective (every rank calls them, with the same arguments) and the result is rank-invariant like
the command line's. Errors are exceptions: feddm_hpc.errors.ConfigError / UserError for wrong
input, with the message the command line would print. Examples: examples/python_api.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

import numpy as np

from feddm_hpc.config import Config, dump_yaml
from feddm_hpc.config import load_config as _load_config_file
from feddm_hpc.config.loading import config_from_yaml_text, render_set_value

Overrides = Union[Mapping[str, object], Sequence[str], None]

__all__ = ["Config", "Run", "evaluate", "export", "is_root", "load_config", "load_model", "resume",
           "sample", "train"]


def _as_sets(overrides: Overrides) -> List[str]:
    """{"a.b": 1} or ["a.b=1"] -> ["a.b=1"], the command line's --set form (values as YAML)."""
    if not overrides:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={render_set_value(value, key)}" for key, value in overrides.items()]
    return [str(s) for s in overrides]


def load_config(path: Union[str, Path, None] = None, overrides: Overrides = None) -> Config:
    """A validated Config from a YAML file (or the defaults, path None) and overrides given as
    {"federation.rounds": 4} or ["federation.rounds=4"]. ConfigError names a wrong field."""
    sets = _as_sets(overrides)
    if path is None:
        return config_from_yaml_text(dump_yaml(Config()), sets)
    return _load_config_file(path, sets)


@dataclass(frozen=True)
class Run:
    """A run directory as training left it (read from disk, so also any earlier run's)."""
    run_dir: Path

    @property
    def config(self) -> Config:
        return config_from_yaml_text((self.run_dir / "config.yaml").read_text())

    @property
    def metrics(self) -> List[dict]:
        path = self.run_dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
            if path.is_file() else []

    @property
    def checkpoints(self) -> List[Path]:
        from feddm_hpc.rundir.checkpoint import list_checkpoints
        return [Path(p) for p in list_checkpoints(self.run_dir / "checkpoints")]

    @property
    def latest_checkpoint(self) -> Optional[Path]:
        from feddm_hpc.rundir.checkpoint import latest_valid
        path = latest_valid(self.run_dir / "checkpoints")
        return None if path is None else Path(path)

    def params(self, ema: bool = False) -> np.ndarray:
        """The latest valid checkpoint's global parameters (or their EMA), flat float32."""
        from feddm_hpc.rundir.checkpoint import load_checkpoint
        data = load_checkpoint(self._latest())
        return data.ema if ema else data.params

    def _latest(self) -> Path:
        from feddm_hpc.errors import UserError
        path = self.latest_checkpoint
        if path is None:
            raise UserError(f"{self.run_dir}: no valid checkpoint")
        return path


def is_root(comm=None) -> bool:
    """True on the rank that writes files and holds results (rank 0), and in a serial process."""
    return _comm(comm).rank == 0


def _comm(comm):
    if comm is not None:
        return comm
    from feddm_hpc.comm import make_communicator
    return make_communicator()


def train(config: Union[Config, str, Path], run_dir: Union[str, Path], overrides: Overrides = None,
          *, comm=None) -> Run:
    """Trains a fresh run into run_dir (which must hold no checkpoints) and returns it.
    config: a Config or a YAML path (overrides apply to a path only)."""
    from feddm_hpc.federation.job import prepare_run_dir, run_training

    if not isinstance(config, Config):
        config = load_config(config, overrides)
    elif overrides:
        config = config_from_yaml_text(dump_yaml(config), _as_sets(overrides))
    comm = _comm(comm)
    run_dir = Path(run_dir)
    prepare_run_dir(comm, run_dir)
    run_training(comm, config, run_dir)
    return Run(run_dir)


def resume(run_dir: Union[str, Path], overrides: Overrides = None, *, comm=None) -> Run:
    """Continues a run from its latest valid checkpoint (overrides as for `feddm-hpc resume
    --set`, e.g. {"federation.rounds": 8} to train further)."""
    from feddm_hpc.federation.job import resume_point, run_training

    comm = _comm(comm)
    run_dir = Path(run_dir)
    path, config, stored = resume_point(comm, run_dir, _as_sets(overrides))
    run_training(comm, config, run_dir, path, stored)
    return Run(run_dir)


def sample(checkpoint: Union[str, Path], num: int = 16, *, sampler: Optional[str] = None,
           steps: Optional[int] = None, seed: Optional[int] = None, eta: Optional[float] = None,
           device: str = "cpu") -> np.ndarray:
    """num images from the checkpoint's EMA model (or an export folder's) as float32
    [num, C, H, W] in [-1, 1], drawn exactly as `feddm-hpc sample` draws them (the same seed
    gives the same images)."""
    from feddm_hpc.cli.sample import draw_checkpoint_samples
    return draw_checkpoint_samples(checkpoint, num, sampler=sampler, steps=steps, seed=seed,
                                   eta=eta, device=device)[0].numpy()


def export(checkpoint: Union[str, Path], out_dir: Union[str, Path]) -> dict:
    """`feddm-hpc export CHECKPOINT OUT_DIR`: the checkpoint's EMA model as model.safetensors
    and config.json (docs/export.md). Returns config.json's content."""
    from feddm_hpc.rundir.export import export_checkpoint
    return export_checkpoint(checkpoint, out_dir)


def load_model(source: Union[str, Path]):
    """The EMA model of a checkpoint file or an export folder as a torch.nn.Module on the CPU, in
    eval mode: `model(x [B,C,H,W] in [-1, 1], t [B] int64)` predicts the noise (or v, as the
    run's diffusion.prediction says)."""
    import torch

    from feddm_hpc.diffusion.parameterization import build_model
    from feddm_hpc.params import unflatten_into
    from feddm_hpc.rundir.export import read_ema_model

    config, weights, image_shape, _ = read_ema_model(source)
    model = build_model(config.model, image_channels=image_shape[0], image_size=image_shape[1])
    with torch.no_grad():
        unflatten_into(weights, model)
    return model.eval()


def evaluate(checkpoint: Union[str, Path], num_samples: int = 1000, *, comm=None,
             **options) -> Optional[dict]:
    """Collective: `feddm-hpc evaluate CHECKPOINT --num-samples N` with the command's options as
    keywords (sampler, steps, eta, seed, out, device, extractor_epochs, extractor_train_subset,
    no_memorization=True, inception_weights, save_samples, overrides=[...]). Writes the same
    JSON file and returns the result on the root rank (None on the others)."""
    from feddm_hpc.cli.evaluate import evaluate_checkpoint
    from feddm_hpc.cli.main import build_parser

    args = build_parser().parse_args(["evaluate", str(checkpoint), "--num-samples", str(int(num_samples))])
    unknown = set(options) - set(vars(args)) - {"overrides"}
    if unknown:
        raise TypeError(f"evaluate: unknown option(s) {sorted(unknown)}; the command's options "
                        f"are {sorted(k for k in vars(args) if k not in ('command', 'run'))}")
    for key, value in options.items():
        setattr(args, key, _as_sets(value) if key == "overrides" else value)
    return evaluate_checkpoint(_comm(comm), args, verbose=False)
