"""One federated run: the only module that knows the order of things in a round.

Per round (DESIGN.md section 2): cohort from (seed, round) on every rank; Bcast of the global
vector; local training of the rank's cohort clients in id order; encode; sizes + Gatherv of the
payloads and a metadata array; the root decodes and accumulates in client-id order, applies the
strategy, updates the EMA, logs one metrics line and checkpoints by policy.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from . import checkpoint as ckpt
from . import seeding
from .client import LocalTrainer
from .compression import make_compressor
from .config import Config, dump_yaml
from .errors import ConfigError
from .federation_setup import RunSetup, build_setup
from .runlog import RunLog
from .strategies import WeightedSum, make_strategy

# Metadata row per client update: id, samples, loss, payload bytes, train seconds, encode seconds.
META_WIDTH = 6


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


def _client_of(key: str) -> int:
    return int(key.rsplit("/", 1)[1])


class Simulation:
    def __init__(self, config: Config, comm, run_dir: Optional[Path], log: RunLog,
                 stop_requested: Callable[[], bool] = lambda: False):
        self.cfg, self.comm, self.run_dir, self.log = config, comm, run_dir, log
        self.stop_requested = stop_requested
        self.setup: RunSetup = build_setup(config, comm, log)
        s = self.setup
        self.num_params = s.spec.total
        self.global_params = s.initial_params.copy()
        self.ema = self.global_params.copy()
        self.strategy = make_strategy(config.federation.algorithm, config.server, self.num_params)
        self.compressor = make_compressor(config.compression)
        self.trainer = LocalTrainer(s.model, s.schedule, config.client, s.images, s.device, config.seed)
        self.start_round = 0

    # ------------------------------------------------------------------ resume

    def restore(self, data: ckpt.CheckpointData) -> None:
        if data.param_fingerprint != self.setup.spec.fingerprint():
            raise ConfigError("model: the checkpoint's parameters do not match this config's model "
                              "(model.* settings changed since the checkpoint was written)")
        self.global_params[:] = data.params
        self.ema[:] = data.ema
        self.strategy.load_state_dict(data.strategy)
        mine = set(self.setup.hosted[self.comm.rank])
        self.compressor.load_state_dict({k: v for k, v in data.clients.items() if _client_of(k) in mine})
        self.start_round = data.round + 1
        self.log.reset_metrics(data.metrics_lines)

    # ------------------------------------------------------------------ one round

    def run_round(self, r: int) -> dict:
        cfg, comm, s = self.cfg, self.comm, self.setup
        t_round = time.perf_counter()
        phases: Dict[str, float] = {}
        cohort = seeding.sample_cohort(cfg.seed, r, cfg.federation.num_clients,
                                       cfg.federation.clients_per_round)
        t = time.perf_counter()
        comm.bcast_array(self.global_params)
        phases["broadcast"] = time.perf_counter() - t

        hosted = set(s.hosted[comm.rank])
        payloads: List[np.ndarray] = []
        rows: List[List[float]] = []
        train_s = encode_s = 0.0
        for cid in (int(c) for c in cohort if int(c) in hosted):
            t = time.perf_counter()
            local, result = self.trainer.train(self.global_params, cid, s.parts[cid], r)
            update = local - self.global_params
            t_enc = time.perf_counter()
            payload = self.compressor.encode(update, cid, seeding.numpy_rng(cfg.seed, seeding.ENCODE, r, cid))
            t_end = time.perf_counter()
            train_s += t_enc - t
            encode_s += t_end - t_enc
            payloads.append(payload)
            rows.append([cid, result.num_samples, result.loss, payload.size, t_enc - t, t_end - t_enc])
        phases["train"], phases["encode"] = train_s, encode_s

        t = time.perf_counter()
        blob = np.concatenate(payloads) if payloads else np.empty(0, dtype=np.uint8)
        parts = comm.gather_bytes(blob)
        meta = comm.gather_rows(np.asarray(rows, dtype=np.float64).reshape(-1, META_WIDTH))
        phases["gather"] = time.perf_counter() - t
        record = None
        if comm.rank == 0:
            record = self._aggregate(r, cohort, parts, meta, phases)
        if comm.rank == 0:
            record["wall_s"] = round(time.perf_counter() - t_round, 4)
        # The checkpoint of round r holds round r's metrics line (without its own write time).
        phases_ckpt = self._maybe_checkpoint(r, record)
        if comm.rank == 0:
            record["phases"]["checkpoint"] = round(phases_ckpt, 5)
            record["wall_s"] = round(time.perf_counter() - t_round, 4)
        return record

    def _aggregate(self, r, cohort, parts, meta, phases) -> dict:
        """Root: decode each payload and accumulate in client-id order, then the server step."""
        # Rank r's payloads are concatenated in its clients' id order; split them by byte counts.
        per_client: Dict[int, tuple] = {}
        row = 0
        for rank_blob in parts:
            offset = 0
            while offset < rank_blob.size:
                m = meta[row]
                n = int(m[3])
                per_client[int(m[0])] = (rank_blob[offset:offset + n], m)
                offset += n
                row += 1
        if sorted(per_client) != [int(c) for c in cohort]:
            raise RuntimeError(f"round {r}: expected updates from clients {list(cohort)}, got {sorted(per_client)}")
        t = time.perf_counter()
        acc = WeightedSum(self.num_params)
        decode_s = 0.0
        for cid in sorted(per_client):
            payload, m = per_client[cid]
            t_dec = time.perf_counter()
            update = self.compressor.decode(payload, self.num_params)
            decode_s += time.perf_counter() - t_dec
            acc.add(update, float(m[1]))
        mean_update = acc.mean()
        self.global_params[:] = self.strategy.apply(self.global_params, mean_update)
        d = np.float32(self.cfg.server.ema_decay)
        self.ema *= d
        self.ema += (np.float32(1) - d) * self.global_params
        phases["decode"] = decode_s
        phases["aggregate"] = time.perf_counter() - t - decode_s

        rows = np.array([per_client[c][1] for c in sorted(per_client)])
        weights = rows[:, 1]
        uplink = int(rows[:, 3].sum())
        downlink = 4 * self.num_params * len(cohort)  # the float32 model to every cohort client
        prev = json.loads(self.log.metrics_lines[-1]) if self.log.metrics_lines else {}
        return {
            "round": r,
            "train_loss": float(np.dot(rows[:, 2], weights) / weights.sum()),
            "clients": [int(c) for c in cohort] if len(cohort) <= 64 else len(cohort),
            "client_loss": {str(int(c)): round(float(l), 6) for c, l in zip(rows[:, 0], rows[:, 2])}
            if len(cohort) <= 64 else None,
            "uplink_bytes": uplink,
            "downlink_bytes": downlink,
            "uplink_float32_bytes": 4 * self.num_params * len(cohort),
            "cum_uplink_bytes": prev.get("cum_uplink_bytes", 0) + uplink,
            "cum_downlink_bytes": prev.get("cum_downlink_bytes", 0) + downlink,
            "client_train_s_max": float(rows[:, 4].max()),
            "phases": {k: round(v, 5) for k, v in phases.items()},
        }

    # ------------------------------------------------------------------ checkpoints

    def _maybe_checkpoint(self, r: int, record: Optional[dict]) -> float:
        last = r == self.cfg.federation.rounds - 1
        if self.run_dir is None or not (last or (r + 1) % self.cfg.checkpoint.every == 0):
            return 0.0
        return self.write_checkpoint(r, record)

    def write_checkpoint(self, r: int, pending_record: Optional[dict] = None) -> float:
        """Collective: per-client state is gathered to the root, which writes the file."""
        t = time.perf_counter()
        blobs = self.comm.gather_bytes(_pack_state(self.compressor.state_dict()))
        if self.comm.rank == 0:
            clients: Dict[str, np.ndarray] = {}
            for blob in blobs:
                clients.update(_unpack_state(blob))
            lines = list(self.log.metrics_lines)
            data = ckpt.CheckpointData(
                round=r, config_yaml=dump_yaml(self.cfg), params=self.global_params, ema=self.ema,
                spec_text=self.setup.spec.as_text(), param_fingerprint=self.setup.spec.fingerprint(),
                strategy=self.strategy.state_dict(), clients=clients,
                metrics_lines=lines + ([json.dumps(pending_record)] if pending_record else []),
                image_shape=self.setup.image_shape)
            ckpt_dir = self.run_dir / "checkpoints"
            ckpt.save_checkpoint(ckpt_dir / ckpt.checkpoint_name(r), data)
            ckpt.prune(ckpt_dir, self.cfg.checkpoint.keep_last)
        self.comm.barrier()
        return time.perf_counter() - t

    # ------------------------------------------------------------------ the run

    def run(self, sample_fn=None) -> str:
        """Runs the remaining rounds. Returns "done" or "stopped" (a stop was requested)."""
        cfg = self.cfg
        started = time.perf_counter()
        for r in range(self.start_round, cfg.federation.rounds):
            record = self.run_round(r)
            if self.comm.rank == 0:
                self.log.round_done(record, cfg.federation.rounds, started, self.start_round)
            if sample_fn is not None and cfg.sampling.every and (r + 1) % cfg.sampling.every == 0 \
                    and r != cfg.federation.rounds - 1:
                sample_fn(self, r)
            # Every rank must agree on stopping: the root decides, all follow.
            if r < cfg.federation.rounds - 1 and self.comm.bcast_object(self.stop_requested()):
                if (r + 1) % cfg.checkpoint.every != 0 and self.run_dir is not None:
                    self.write_checkpoint(r)
                return "stopped"
        if sample_fn is not None:
            sample_fn(self, cfg.federation.rounds - 1)
        return "done"
