"""Work done between rounds and at the end of training, as round callbacks.

`Simulation.run` calls, after each round, `after_round(view, round_index, record)` of every
callback in list order (record: the round's metrics line on the root, None elsewhere); a
callback returns True to ask the run to stop (every rank must return the same answer: decide on
the root and broadcast). After the last round it calls `at_end(view)` in the same order.

A callback sees a `RunView`, never the Simulation: the config, the communicator, the run
directory, the log, the start-up objects and read-only views of the global and EMA vectors.
Callbacks may use the rank's model instance and trainer as scratch space: local training
reloads the global vector into the model before every client.

`logging.callbacks` adds the user's own, by import path (`user_callbacks`), after the built-in
ones and before the stop decision; their protocol is RoundCallback (re-exported by
feddm_hpc.extend). A callback holds no state in checkpoints: a resumed run builds it afresh.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np


def read_only(array: np.ndarray) -> np.ndarray:
    """A view that follows in-place updates of `array` but cannot write to it."""
    view = array.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True)
class RunView:
    cfg: object                      # config.Config
    comm: object
    run_dir: Optional[Path]
    log: object                      # runlog.RunLog
    setup: object                    # federation_setup.RunSetup
    trainer: object                  # client.LocalTrainer (scratch: personalization)
    global_params: np.ndarray        # read-only
    ema: np.ndarray                  # read-only
    start_round: int
    # Partial sharing (federation.shared_parts): a collective call returning every client's
    # model vector on the root (Simulation.client_models); None when the run has one model.
    client_models: Optional[Callable[[], list]] = None


class RoundCallback:
    def after_round(self, view: RunView, round_index: int, record: Optional[dict]) -> bool:
        return False

    def at_end(self, view: RunView) -> None:
        pass


class RoundLog(RoundCallback):
    """metrics.jsonl and the progress line (root). First in every list: the next round's
    cumulative byte counts and the checkpoints read the lines it keeps."""

    def __init__(self):
        self.started = time.perf_counter()

    def after_round(self, view, round_index, record):
        if view.comm.rank == 0:
            view.log.round_done(record, view.cfg.federation.rounds, self.started, view.start_round)
        return False


class SampleGrids(RoundCallback):
    """A grid of EMA samples every `sampling.every` rounds and at the end (root only).
    `written`: (round, path) of the last grid this run drew, for callbacks after it."""

    def __init__(self):
        self.written = None

    def after_round(self, view, round_index, record):
        every = view.cfg.sampling.every
        if every and (round_index + 1) % every == 0 and round_index != view.cfg.federation.rounds - 1:
            self._draw(view, round_index)
        return False

    def at_end(self, view):
        self._draw(view, view.cfg.federation.rounds - 1)

    def _draw(self, view, round_index):
        from feddm_hpc.rundir.run_outputs import save_sample_grid

        if view.run_dir is not None:
            models = view.client_models() if view.client_models is not None else None  # collective
            save_sample_grid(view, round_index, models)
            path = view.run_dir / "samples" / f"round-{round_index:06d}.png"
            if view.comm.rank == 0 and view.cfg.sampling.num_samples > 0:
                self.written = (round_index, path)


class Evaluation(RoundCallback):
    """FD/KID/PRDC of the EMA model every `evaluation.every` rounds (collective).
    `result`: (round, scores) of the last evaluation on the root, for callbacks after it."""

    def __init__(self):
        self.result = None

    def after_round(self, view, round_index, record):
        e = view.cfg.evaluation
        if e.every and (round_index + 1) % e.every == 0:
            from feddm_hpc.evaluation.evaluate import evaluate_run

            view.comm.context = f"round {round_index}, evaluation"
            scores = evaluate_run(view, round_index, e.num_samples, extractor_epochs=e.extractor_epochs,
                                  extractor_max_train=e.extractor_max_train)
            if scores is not None:
                self.result = (round_index, scores)
        return False


class StopOnRequest(RoundCallback):
    """Stops between rounds when `requested()` is true on the root (a preemption signal)."""

    def __init__(self, requested: Callable[[], bool]):
        self.requested = requested

    def after_round(self, view, round_index, record):
        if round_index >= view.cfg.federation.rounds - 1:
            return False
        view.comm.context = f"round {round_index}, stop decision"
        return bool(view.comm.bcast_object(self.requested() if view.comm.rank == 0 else None))


class Personalization(RoundCallback):
    """Per-client fine-tuning after the last round (personalization.steps > 0; collective)."""

    def at_end(self, view):
        from feddm_hpc.federation.personalization import personalize

        personalize(view)


def user_callbacks(paths: Sequence[str], field: str = "logging.callbacks") -> List[RoundCallback]:
    """The user's callbacks of `logging.callbacks`, in list order: each a RoundCallback subclass
    by import path, overriding after_round or at_end, built with no arguments (on every rank).
    ConfigError naming the field otherwise (docs/extending.md)."""
    from feddm_hpc.errors import ConfigError
    from feddm_hpc.plugins import load_class

    built: List[RoundCallback] = []
    for path in paths:
        cls = load_class(path, field, RoundCallback)
        if cls.after_round is RoundCallback.after_round and cls.at_end is RoundCallback.at_end:
            raise ConfigError(f"{field}: {path!r} overrides neither after_round nor at_end of "
                              f"{RoundCallback.__module__}.RoundCallback")
        try:
            built.append(cls())
        except Exception as exc:
            raise ConfigError(f"{field}: building {path!r} (with no arguments) failed: "
                              f"{type(exc).__name__}: {exc}") from None
    return built


def standard_callbacks(stop_requested: Callable[[], bool], sample_grids: bool = False,
                       extra: Sequence[RoundCallback] = ()) -> List[RoundCallback]:
    """The callbacks of a training run, in their order: log, personalization (at the end, before
    the final grid), sample grids, evaluation, TensorBoard (a no-op unless logging.tensorboard),
    `extra` (the user's logging.callbacks), stop decision."""
    from feddm_hpc.federation.tensorboard_log import TensorBoardLog

    callbacks: List[RoundCallback] = [RoundLog(), Personalization()]
    grids = SampleGrids() if sample_grids else None
    if grids is not None:
        callbacks.append(grids)
    evaluation = Evaluation()
    return callbacks + [evaluation, TensorBoardLog(grids, evaluation), *extra,
                        StopOnRequest(stop_requested)]
