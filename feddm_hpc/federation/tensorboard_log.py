"""`logging.tensorboard: true`: the run as TensorBoard event files in RUN_DIR/tensorboard (root only).

A round callback (callbacks.py) that reads what a round already produced: its metrics record (the
line metrics.jsonl gets), the scores of the evaluation callback before it and the grid the sample
callback drew. It changes nothing the round computes, so runs with and without it are identical.
Written through torch.utils.tensorboard.SummaryWriter (`pip install tensorboard`); view with
`tensorboard --logdir RUN_DIR/tensorboard`. The step of every value is the round index.

Scalar tags, each the value of the metrics.jsonl field of the same name:
    train/loss          train_loss (absent while DP withholds it)
    bytes/<field>       uplink_bytes, downlink_bytes and every other *_bytes field (cum_*, *_float32_*)
    phases/<phase>      the round's phase times in seconds (broadcast, train, encode, ...)
    time/<field>        wall_s, sim_round_s, client_train_s_max
    privacy/<field>     epsilon, delta, noise_multiplier, clip_norm (with privacy.clip_norm)
    clients/<field>     clients, arrived, dropped, stragglers, rejected (counts, also where the
                        record lists the ids), aggregated_clients, rejected_updates
    round/<field>       any other number in the record
    eval/<score>        with evaluation.every: fd, kid, kid_std, precision, recall, density,
                        coverage, class_histogram_distance, fid_inception when computed, ...
Images: `samples`, each sample grid when it is drawn (sampling.every, and the last round).
On resume, events from the resumed round on are purged (SummaryWriter's purge_step).
"""
from __future__ import annotations

from numbers import Real
from typing import Dict, Optional

from feddm_hpc.errors import ConfigError

LOGDIR = "tensorboard"
INSTALL = "pip install tensorboard (or pip install 'feddm_hpc[tensorboard]')"
_GROUPS = {"train_loss": "train/loss", "wall_s": "time/wall_s", "sim_round_s": "time/sim_round_s",
           "client_train_s_max": "time/client_train_s_max"}
_PRIVACY = ("epsilon", "delta", "noise_multiplier", "clip_norm")
_CLIENTS = ("clients", "arrived", "dropped", "stragglers", "rejected", "aggregated_clients",
            "rejected_updates")
_EVAL_SETTINGS = {"round", "steps", "eta", "seed", "ranks", "reference_seed", "num_samples"}


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def round_scalars(record: dict) -> Dict[str, float]:
    """tag -> value of one metrics record (the module docstring's table)."""
    out = {}
    for key, value in record.items():
        if key == "round":
            continue
        if key == "phases" and isinstance(value, dict):
            out.update({f"phases/{k}": float(v) for k, v in value.items() if _number(v)})
        elif key in _CLIENTS and isinstance(value, (list, tuple)):
            out[f"clients/{key}"] = float(len(value))
        elif _number(value):
            if key in _GROUPS:
                tag = _GROUPS[key]
            elif key.endswith("_bytes"):
                tag = f"bytes/{key}"
            elif key in _PRIVACY:
                tag = f"privacy/{key}"
            elif key in _CLIENTS:
                tag = f"clients/{key}"
            else:
                tag = f"round/{key}"
            out[tag] = float(value)
    return out


def eval_scalars(scores: dict) -> Dict[str, float]:
    """tag -> value of an evaluation result (evaluation.evaluate.evaluate_run's dict)."""
    return {f"eval/{k}": float(v) for k, v in scores.items()
            if k not in _EVAL_SETTINGS and not k.startswith("_") and _number(v)}


def open_writer(logdir, purge_step: Optional[int] = None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError(f"logging.tensorboard: cannot import torch.utils.tensorboard ({exc}); "
                          f"install it with: {INSTALL}") from None
    return SummaryWriter(log_dir=str(logdir), purge_step=purge_step)


class TensorBoardLog:
    """A round callback (callbacks.RoundCallback's two methods; not a subclass, so this module
    need not import callbacks.py, which lists it). Root only; a no-op unless logging.tensorboard.
    `grids`, `evaluation`: the SampleGrids and Evaluation callbacks listed before it (or None),
    whose outputs it logs."""

    def __init__(self, grids=None, evaluation=None):
        self.grids, self.evaluation = grids, evaluation
        self.writer = None
        self._logged_grid = self._logged_eval = None

    def _active(self, view) -> bool:
        logging = getattr(view.cfg, "logging", None)
        return bool(logging is not None and logging.tensorboard and view.comm.rank == 0
                    and view.run_dir is not None)

    def _open(self, view):
        if self.writer is None:
            self.writer = open_writer(view.run_dir / LOGDIR, view.start_round or None)
        return self.writer

    def after_round(self, view, round_index, record):
        if not self._active(view):
            return False
        writer = self._open(view)
        for tag, value in round_scalars(record or {}).items():
            writer.add_scalar(tag, value, round_index)
        self._log_outputs(writer)
        writer.flush()  # a live view while training, and nothing lost if the job is killed
        return False

    def at_end(self, view):
        if not self._active(view):
            return
        writer = self._open(view)
        self._log_outputs(writer)
        writer.close()
        self.writer = None

    def _log_outputs(self, writer):
        result = getattr(self.evaluation, "result", None)
        if result is not None and result is not self._logged_eval:
            self._logged_eval = result
            for tag, value in eval_scalars(result[1]).items():
                writer.add_scalar(tag, value, result[0])
        grid = getattr(self.grids, "written", None)
        if grid is not None and grid is not self._logged_grid and grid[1].exists():
            from feddm_hpc.rundir.imaging import read_png

            self._logged_grid = grid
            pixels = read_png(grid[1])
            writer.add_image("samples", pixels, grid[0], dataformats="HW" if pixels.ndim == 2 else "HWC")
