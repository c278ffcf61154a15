"""One federated run: the only module that knows the order of things in a round.

Per round (DESIGN.md section 2): cohort from (seed, round) and who of it reports (dropout,
stragglers: participation.py) on every rank; the downlink (downlink.py) and, for SCAFFOLD, the
server control c; local training of the rank's arriving clients in id order; each client's
vector through the uplink's stages; the transport brings the reports to the root, which
decodes, checks and accumulates in client-id order (server.py) with the round's aggregation
rule, applies the strategy, updates the EMA, logs one metrics line and checkpoints by policy.
Between rounds and at the end: round callbacks (callbacks.py).

The round names no mechanism: the uplink, the transport, the aggregation rule and this rank's
grouping of clients are chosen once, in __init__, from the config (docs/design.md).
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from feddm_hpc import seeding
from feddm_hpc.compression import make_compressor
from feddm_hpc.config import Config, dump_yaml
from feddm_hpc.diffusion.loss import make_loss
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation import server
from feddm_hpc.federation.aggregation import aggregation_rule
from feddm_hpc.federation.attacks import DataPoison
from feddm_hpc.federation.callbacks import RoundCallback, RunView, read_only, standard_callbacks
from feddm_hpc.federation.client import LocalTrainer, local_steps_for
from feddm_hpc.federation.downlink import Downlink
from feddm_hpc.federation.participation import plan_round
from feddm_hpc.federation.phases import Phases
from feddm_hpc.federation.rank_training import RankTraining, grouping_of_run, pipelines_clients
from feddm_hpc.federation.reports import ClientReport, make_report
from feddm_hpc.federation.server import ema_decay_at
from feddm_hpc.federation.setup import RunSetup, build_setup, sharing_of
from feddm_hpc.federation.shared_space import PrivateParts, SharedSpace, client_models
from feddm_hpc.federation.transports import transport_for
from feddm_hpc.federation.uplink import build_uplink
from feddm_hpc.rundir import checkpoint as ckpt
from feddm_hpc.rundir.runlog import RunLog
from feddm_hpc.strategies import make_strategy


def _pack_state(state: Dict[str, np.ndarray]) -> np.ndarray:
    """Per-client state as .npz bytes (arrays only; read back with allow_pickle=False)."""
    buf = io.BytesIO()
    np.savez(buf, **{k.replace("/", "|"): v for k, v in state.items()})
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def _unpack_state(blob: np.ndarray) -> Dict[str, np.ndarray]:
    if blob.size == 0:
        return {}
    with np.load(io.BytesIO(blob.tobytes()), allow_pickle=False) as npz:
        return {k.replace("|", "/"): npz[k] for k in npz.files}


class Simulation:
    def __init__(self, config: Config, comm, run_dir: Optional[Path], log: RunLog,
                 stop_requested: Callable[[], bool] = lambda: False):
        self.cfg, self.comm, self.run_dir, self.log = config, comm, run_dir, log
        self.stop_requested = stop_requested
        self.setup: RunSetup = build_setup(config, comm, log)
        s = self.setup
        # The shared vector (shared_space.py) is what is trained, coded, aggregated and counted;
        # when every part is shared it is the flat model vector itself (no copy).
        self.space = SharedSpace(s.spec, config.federation.shared_parts)
        self.num_params = self.space.size
        self.shared_size = sharing_of(config, s.model)
        self.global_params = s.initial_params.copy()
        self.shared_global = self.space.take(self.global_params)
        self.ema = self.global_params.copy()
        self._ema_term: Optional[np.ndarray] = None   # the EMA's scratch (_apply)
        self.private = PrivateParts(self.space, s.initial_params)
        self.strategy = make_strategy(config.federation.algorithm, config.server, self.num_params,
                                      run_config=config)
        self.compressor = make_compressor(config.compression)
        self.downlink = Downlink(config.compression, self.shared_global)
        # Chosen once, so that the round names no mechanism: what a client's vector goes
        # through (uplink.py), how reports travel (transports.py), how they are aggregated
        # (aggregation.py), and which clients this rank trains in which groups (rank_training.py).
        self.uplink = build_uplink(config, self.compressor, self.num_params)
        self.transport = transport_for(config, self.num_params, len(self.strategy.upload_names))
        self.transport.outbox.attach(self.compressor)   # payloads encoded into the send buffer
        self.transport.connect(comm)   # collective
        self.rule_of_round = aggregation_rule(config)
        self.trainer = LocalTrainer(s.model, s.schedule, config.client, s.images, s.device, config.seed,
                                    loss_fn=make_loss(config.diffusion),
                                    total_rounds=config.federation.rounds,
                                    precision=config.system.precision)
        self.training = RankTraining(self.trainer, s, grouping_of_run(config, s, comm.rank, comm.size,
                                                                      self._steps_of),
                                     self.private, self.strategy.gradient_terms,
                                     DataPoison(config).of, config.diffusion,
                                     pipelined=pipelines_clients(config.system, s.device))
        # Under DP the metrics line holds per-client values only if released on purpose.
        p = config.privacy
        self.client_metrics = not p.dp or p.release_client_metrics
        self.client_parts = self._stateful_client_parts()
        self.start_round = 0

    # ------------------------------------------------------------------ resume

    def restore(self, data: ckpt.CheckpointData) -> None:
        if data.param_fingerprint != self.setup.spec.fingerprint():
            raise ConfigError("model: the checkpoint's parameters do not match this config's model "
                              "(model.* settings changed since the checkpoint was written)")
        self.global_params[:] = data.params
        self.shared_global = self.space.take(self.global_params, out=self.shared_global)
        self.ema[:] = data.ema
        for name, part in self._server_parts().items():
            part.load_state_dict(getattr(data, name))
        # Every rank takes the state of the clients it hosts now, whatever rank count wrote it.
        mine = self.setup.hosted[self.comm.rank]
        by_prefix: Dict[str, Dict[str, np.ndarray]] = {}
        for key, value in data.clients.items():
            by_prefix.setdefault(key.split("/", 1)[0], {})[key] = value
        for prefix, part in self.client_parts.items():
            part.load_state_dict(by_prefix.get(prefix, {}), client_ids=mine)
        self.start_round = data.round + 1
        self.log.reset_metrics(data.metrics_lines)

    # ------------------------------------------------------------------ stateful parts

    def _server_parts(self) -> Dict[str, object]:
        """Checkpoint group -> the root's stateful part (state_dict / load_state_dict), restored
        after the global model. A new stateful part is one entry here or in _client_parts."""
        return {"strategy": self.strategy, "server": self.downlink}

    def _stateful_client_parts(self) -> Dict[str, object]:
        """Key prefix in the checkpoint's clients group -> the per-client stateful part (the
        codec's residuals and the private parts hold nothing when unused)."""
        parts = {"residual": self.compressor, self.private.prefix: self.private}
        if self.strategy.client_state is not None:   # a strategy without per-client state
            parts[self.strategy.client_state.prefix] = self.strategy.client_state
        return parts

    # ------------------------------------------------------------------ one round

    def _steps_of(self, cid: int) -> int:
        return local_steps_for(self.cfg.client, self.setup.parts[cid].size)

    def run_round(self, r: int) -> dict:
        """broadcast -> train -> reduce -> apply -> record; the checkpoint by policy."""
        cfg, comm = self.cfg, self.comm
        t_round = time.perf_counter()
        phases = Phases()
        cohort = seeding.sample_cohort(cfg.seed, r, cfg.federation.num_clients,
                                       cfg.federation.clients_per_round,
                                       cfg.federation.cohort_sampling)
        plan = plan_round(cfg.seed, r, cohort, cfg.federation, self._steps_of)
        comm.context = f"round {r}, broadcast"  # named in a collective-timeout message
        with phases.timed("broadcast"):
            start, down_bytes = self.downlink.send(comm, self.shared_global)
            self.strategy.broadcast(comm)

        reports = self._train_clients(r, plan, start, phases)
        # Waiting for the busiest rank is load imbalance, not communication: time it apart.
        comm.context = f"round {r}, wait for the slowest rank"
        with phases.timed("wait"):
            self.transport.wait_for_ranks(comm)   # streamed payloads arrive meanwhile
        comm.context = f"round {r}, gather"
        reduced = self.transport.reduce(comm, reports, start, phases,
                                        self.rule_of_round(r, plan.cohort))
        record = None
        if comm.rank == 0:
            if sorted(reduced.reports) != sorted(plan.arrived):
                raise RuntimeError(f"round {r}: expected updates from clients {list(plan.arrived)}, "
                                   f"got {sorted(reduced.reports)}")
            record = self._apply(r, plan, down_bytes, reduced, phases)
            record["wall_s"] = round(time.perf_counter() - t_round, 4)
        # The checkpoint of round r holds round r's metrics line (without its own write time).
        phases_ckpt = self._maybe_checkpoint(r, record)
        if comm.rank == 0:
            record["phases"]["checkpoint"] = round(phases_ckpt, 5)
            record["wall_s"] = round(time.perf_counter() - t_round, 4)
        return record

    def _train_clients(self, r, plan, start, phases) -> List[ClientReport]:
        """Local training, encoding and the strategy's extra uploads of this rank's arrivals, one
        client or one group of clients (client_groups.py) at a time.
        Phases: train and encode (wall s), train_cpu (CPU s of this process in local training,
        meaningful when other jobs share the cores; benchmarks/recipe.py reads it). Pipelined
        (rank_training.py), a client is encoded while the next one trains."""
        reports: List[ClientReport] = []
        for name in ("train", "encode", "train_cpu"):   # present even on a rank with no client
            phases.add(name, 0.0)

        def deliver(local, result, train_s):
            reports.append(self._report(local, result, train_s, start, r, plan, phases))
            self.transport.client_done(self.comm, reports[-1])   # its payload may leave now

        self.training.run(plan, start, r, deliver, phases)
        return reports

    def _report(self, local, result, train_s, start, r, plan, phases) -> ClientReport:
        """The client's vector through the uplink's stages (uplink.py), then its report."""
        cid = result.client_id
        t_enc = time.perf_counter()
        out = self.uplink.send(cid, r, plan.cohort, start, local, result.loss, result.num_samples)
        extras = () if out.payload is None else \
            self.strategy.client_uploads(cid, r, start, local, result.steps)
        phases.add("encode", time.perf_counter() - t_enc)
        report = make_report(cid, out.num_samples, out.loss, train_s, out.payload, extras,
                             len(self.strategy.upload_names), outbox=self.transport.outbox)
        report.update_norm = out.update_norm
        return report

    def _apply(self, r, plan, down_bytes, reduced, phases) -> dict:
        """Root: the server step on the aggregate, the EMA, and the round's metrics record."""
        agg = reduced.aggregate
        with phases.timed("aggregate"):
            if agg.mean_update is None:
                self.log.info(f"round {r}: no client update to aggregate ({len(plan.dropped)} dropped, "
                              f"{len(plan.stragglers)} late, {len(agg.rejected)} rejected); "
                              f"the model is unchanged")
            else:
                if not agg.accepted:   # DP: every round releases noise (aggregation.DPMean)
                    self.log.info(f"round {r}: no client update was accepted; the model moves by "
                                  f"the DP noise alone")
                self.shared_global[:] = self.strategy.server_step(self.shared_global, agg)
                self.space.put(self.shared_global, self.global_params)   # full sharing: the same array
                d = np.float32(ema_decay_at(self.cfg.server, r))
                self.ema *= d
                # (1 - d) * params into a buffer kept across rounds: the same float32 products
                # as the expression's temporary, without a model-sized allocation each round.
                if self._ema_term is None:
                    self._ema_term = np.empty_like(self.global_params)
                self.ema += np.multiply(self.global_params, np.float32(1) - d, out=self._ema_term)
        prev = self.log.metrics_lines[-1] if self.log.metrics_lines else None
        record = server.round_record(r, plan, reduced.reports, agg, self.num_params, down_bytes,
                                     len(self.strategy.upload_names), self.strategy.broadcast_vectors,
                                     prev, client_metrics=self.client_metrics)
        record.update(self.shared_size.metrics_fields())   # lowrank: shared and dense-equivalent counts
        record["phases"] = phases.rounded()
        return record

    # ------------------------------------------------------------------ checkpoints

    def _maybe_checkpoint(self, r: int, record: Optional[dict]) -> float:
        last = r == self.cfg.federation.rounds - 1
        if self.run_dir is None or not (last or (r + 1) % self.cfg.checkpoint.every == 0):
            return 0.0
        return self.write_checkpoint(r, record)

    def write_checkpoint(self, r: int, pending_record: Optional[dict] = None) -> float:
        """Collective: per-client state is gathered to the root, which writes the file."""
        t = time.perf_counter()
        self.comm.context = f"round {r}, checkpoint"
        state = {k: v for part in self.client_parts.values() for k, v in part.state_dict().items()}
        blobs = self.comm.gather_bytes(_pack_state(state))
        error = None
        if self.comm.rank == 0:
            clients: Dict[str, np.ndarray] = {}
            for blob in blobs:
                clients.update(_unpack_state(blob))
            lines = list(self.log.metrics_lines)
            data = ckpt.CheckpointData(
                round=r, config_yaml=dump_yaml(self.cfg), params=self.global_params, ema=self.ema,
                spec_text=self.setup.spec.as_text(), param_fingerprint=self.setup.spec.fingerprint(),
                clients=clients,
                metrics_lines=lines + ([json.dumps(pending_record)] if pending_record else []),
                image_shape=self.setup.image_shape,
                **{name: part.state_dict() for name, part in self._server_parts().items()})
            ckpt_dir = self.run_dir / "checkpoints"
            try:
                ckpt.save_checkpoint(ckpt_dir / ckpt.checkpoint_name(r), data)
                ckpt.prune(ckpt_dir, self.cfg.checkpoint.keep_last)
            except ckpt.CheckpointError as exc:  # e.g. a full disk: every rank must stop, not hang
                error = str(exc)
        # The root's outcome reaches every rank, so all end together with the same clear error.
        error = self.comm.bcast_object(error if self.comm.rank == 0 else None)
        if error is not None:
            raise ckpt.CheckpointError(error)
        return time.perf_counter() - t

    # ------------------------------------------------------------------ the run

    def client_models(self) -> Optional[List[np.ndarray]]:
        """Collective, partial sharing only: every client's model (the EMA's shared parts, the
        client's private parts, gathered from the ranks that host them) on the root; the other
        ranks get placeholders of the same size (generation broadcasts the root's)."""
        blobs = self.comm.gather_bytes(_pack_state(self.private.state_dict()))
        n = self.cfg.federation.num_clients
        if self.comm.rank != 0:
            return [self.ema] * n
        state: Dict[str, np.ndarray] = {}
        for blob in blobs:
            state.update(_unpack_state(blob))
        return client_models(self.space, self.ema, state, n)

    def view(self) -> RunView:
        """What round callbacks may read (callbacks.py)."""
        return RunView(cfg=self.cfg, comm=self.comm, run_dir=self.run_dir, log=self.log,
                       setup=self.setup, trainer=self.trainer,
                       global_params=read_only(self.global_params), ema=read_only(self.ema),
                       start_round=self.start_round,
                       client_models=None if self.space.identity else self.client_models)

    def run(self, callbacks: Optional[List[RoundCallback]] = None) -> str:
        """Runs the remaining rounds. Returns "done" or "stopped" (a callback asked to stop).
        callbacks: default standard_callbacks (no sample grids) with this run's stop flag."""
        cfg = self.cfg
        if callbacks is None:
            callbacks = standard_callbacks(self.stop_requested)
        view = self.view()
        for r in range(self.start_round, cfg.federation.rounds):
            record = self.run_round(r)
            stop = False
            for callback in callbacks:
                stop = callback.after_round(view, r, record) or stop
            if stop:
                if (r + 1) % cfg.checkpoint.every != 0 and self.run_dir is not None:
                    self.write_checkpoint(r)
                return "stopped"
        for callback in callbacks:
            callback.at_end(view)
        return "done"
