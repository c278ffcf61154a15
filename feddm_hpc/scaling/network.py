"""A network model: the round time a real federation would see for a simulated run.

Every client gets a fixed link, drawn once from (seed, client_id) and never from the rank, so
the modelled times of a run do not depend on how many ranks simulated it:

    uplink and downlink bandwidth (Mbit/s), one-way latency (ms), and a compute-speed factor,
    each lognormal with a given median and sigma (sigma 0: every client has the median).

A client of round r then takes

    t_c = latency_c + downlink_bytes_c / down_bw_c      (receive the model)
        + compute_c * factor_c                          (local training)
        + latency_c + uplink_bytes_c / up_bw_c          (send the update)

and the round takes max_c t_c over the clients that did not drop out (stragglers included: the
server waits for them unless `deadline_s` cuts the round short), plus the root's own decode and
aggregate time from the metrics line (`include_server`). compute_c is `measured` (the train time
the simulator measured for that client; see _measured_compute), `modelled` (the simulator's own
participation model: local steps x federation.step_time_s x the client's slowness) or `none`.

Works offline on any run directory: `simulate_run(run_dir, net_cfg) -> per-round seconds`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from feddm_hpc import seeding
from feddm_hpc.errors import ConfigError

NETWORK_PURPOSE = seeding.NETWORK   # the link draws' stream (seeding.py holds every purpose)
COMPUTE_MODES = ("measured", "modelled", "none")


@dataclass(frozen=True)
class Dist:
    """Lognormal with the given median and sigma (of the log); sigma 0 is the constant median."""
    median: float
    sigma: float = 0.0

    def value(self, z: float) -> float:
        """The draw for a standard normal z."""
        return self.median * math.exp(self.sigma * z)


@dataclass(frozen=True)
class NetworkConfig:
    uplink_mbps: Dist = field(default_factory=lambda: Dist(10.0, 0.5))     # mobile-ish uplink
    downlink_mbps: Dist = field(default_factory=lambda: Dist(50.0, 0.5))
    latency_ms: Dist = field(default_factory=lambda: Dist(40.0, 0.3))
    compute_factor: Dist = field(default_factory=lambda: Dist(1.0, 0.0))  # x the compute time
    compute: str = "measured"       # measured | modelled | none
    seed: Optional[int] = None      # None: the run's own seed
    deadline_s: Optional[float] = None   # the server stops waiting after this many seconds
    include_server: bool = True     # add the root's decode + aggregate seconds


@dataclass(frozen=True)
class Link:
    up_bps: float       # bits per second
    down_bps: float
    latency_s: float
    compute_factor: float


# ---------------------------------------------------------------------------- parsing

def _number(value, name: str, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{name}: must be > 0, got {value!r}")
    if not positive and value < 0:
        raise ConfigError(f"{name}: must be >= 0, got {value!r}")
    return float(value)


def _dist(value, name: str) -> Dist:
    """A number (constant) or {median: M, sigma: S} (lognormal)."""
    if isinstance(value, Mapping):
        unknown = set(value) - {"median", "sigma"}
        if unknown:
            raise ConfigError(f"{name}.{sorted(unknown)[0]}: unknown key (valid: median, sigma)")
        if "median" not in value:
            raise ConfigError(f"{name}.median: required")
        return Dist(_number(value["median"], f"{name}.median"),
                    _number(value.get("sigma", 0.0), f"{name}.sigma", positive=False))
    return Dist(_number(value, name))


def parse_network(data: Any, prefix: str = "network") -> NetworkConfig:
    """A NetworkConfig from plain data (the SPEC's `network:` section); errors name the field."""
    if data is None:
        return NetworkConfig()
    if isinstance(data, NetworkConfig):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping, got {data!r}")
    known = {f.name for f in fields(NetworkConfig)}
    kwargs: Dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}"
        if key not in known:
            raise ConfigError(f"{name}: unknown key (valid: {', '.join(sorted(known))})")
        if key in ("uplink_mbps", "downlink_mbps", "latency_ms", "compute_factor"):
            kwargs[key] = _dist(value, name)
            if key == "latency_ms" and kwargs[key].median < 0:
                raise ConfigError(f"{name}: must be >= 0")
        elif key == "compute":
            if value not in COMPUTE_MODES:
                raise ConfigError(f"{name}: {value!r} is not one of {', '.join(COMPUTE_MODES)}")
            kwargs[key] = value
        elif key == "seed":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{name}: expected an integer or null, got {value!r}")
            kwargs[key] = value
        elif key == "deadline_s":
            kwargs[key] = None if value is None else _number(value, name)
        elif key == "include_server":
            if not isinstance(value, bool):
                raise ConfigError(f"{name}: expected true or false, got {value!r}")
            kwargs[key] = value
    return NetworkConfig(**kwargs)


# ---------------------------------------------------------------------------- the model

def client_link(seed: int, client_id: int, net: NetworkConfig) -> Link:
    """The client's link: four standard normals from (seed, client_id) only, always all four
    in the same order, so changing one sigma never shifts another quantity's draw."""
    rng = np.random.Generator(np.random.PCG64(
        np.random.SeedSequence([int(seed), NETWORK_PURPOSE, int(client_id)])))
    z = rng.standard_normal(4)
    return Link(up_bps=net.uplink_mbps.value(z[0]) * 1e6,
                down_bps=net.downlink_mbps.value(z[1]) * 1e6,
                latency_s=net.latency_ms.value(z[2]) * 1e-3,
                compute_factor=net.compute_factor.value(z[3]))


def client_time(link: Link, down_bytes: float, up_bytes: float, compute_s: float) -> float:
    return (link.latency_s + 8.0 * down_bytes / link.down_bps
            + compute_s * link.compute_factor
            + link.latency_s + 8.0 * up_bytes / link.up_bps)


@dataclass
class RoundTiming:
    round_s: float
    client_s: Dict[int, float]          # modelled time of each participating client
    late: List[int] = field(default_factory=list)   # past deadline_s
    server_s: float = 0.0
    per_client_bytes_estimated: bool = False


def round_time(seed: int, net: NetworkConfig, participants: Sequence[int],
               down_bytes: Mapping[int, float], up_bytes: Mapping[int, float],
               compute_s: Mapping[int, float], server_s: float = 0.0) -> RoundTiming:
    """The modelled round: max over participants (or the deadline, if one is missed)."""
    times = {int(c): client_time(client_link(seed, c, net), down_bytes[c], up_bytes[c], compute_s[c])
             for c in participants}
    slowest = max(times.values(), default=0.0)
    late = []
    if net.deadline_s is not None and slowest > net.deadline_s:
        late = sorted(c for c, t in times.items() if t > net.deadline_s)
        slowest = net.deadline_s
    server = server_s if net.include_server else 0.0
    return RoundTiming(slowest + server, times, late, server)


# ---------------------------------------------------------------------------- run directories

def _ids_or_none(value) -> Optional[List[int]]:
    """metrics.jsonl holds id lists for small cohorts and plain counts for large ones."""
    return [int(c) for c in value] if isinstance(value, list) else None


def _measured_compute(record: dict, participants: Sequence[int]) -> Dict[int, float]:
    """Per-client measured train seconds: `client_train_s` {id: s} where the metrics carry it;
    otherwise every client gets `client_train_s_max`, the slowest measured client of the round
    (the simulator logs only that maximum): a conservative stand-in, exact for equal clients."""
    per = record.get("client_train_s")
    if isinstance(per, Mapping):
        fallback = float(record.get("client_train_s_max") or 0.0)
        return {c: float(per.get(str(c), fallback)) for c in participants}
    t = float(record.get("client_train_s_max") or 0.0)
    return {c: t for c in participants}


class RunModel:
    """What the network model needs of a run directory: its config and client sizes, so the
    cohort, who dropped out and each client's modelled compute can be recomputed exactly as the
    simulator computed them (seeding.sample_cohort, participation.plan_round)."""

    def __init__(self, run_dir: Path):
        from feddm_hpc.config import load_config
        from feddm_hpc.federation.client import local_steps_for

        self.run_dir = Path(run_dir)
        self.config = load_config(self.run_dir / "config.yaml")
        sizes = None
        part = self.run_dir / "partition.json"
        if self.config.client.local_steps is None:   # local_epochs: steps depend on sizes
            sizes = json.loads(part.read_text())["client_sizes"]
        cfg = self.config.client
        self.steps_of = (lambda c: local_steps_for(cfg, sizes[c])) if sizes is not None \
            else (lambda c: cfg.local_steps)

    def plan(self, r: int):
        from feddm_hpc.federation.participation import plan_round
        from feddm_hpc.seeding import sample_cohort

        f = self.config.federation
        cohort = sample_cohort(self.config.seed, r, f.num_clients, f.clients_per_round,
                               f.cohort_sampling)
        return plan_round(self.config.seed, r, cohort, f, self.steps_of)

    def records(self) -> List[dict]:
        path = self.run_dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def simulate_record(run: RunModel, record: dict, net: NetworkConfig) -> RoundTiming:
    r = int(record["round"])
    plan = run.plan(r)
    cohort = _ids_or_none(record.get("clients")) or list(plan.cohort)
    arrived = _ids_or_none(record.get("arrived"))
    arrived = list(plan.arrived) if arrived is None else arrived
    late = _ids_or_none(record.get("stragglers"))
    late = list(plan.stragglers) if late is None else late
    participants = sorted(set(arrived) | set(late))
    seed = run.config.seed if net.seed is None else net.seed
    down = record["downlink_bytes"] / max(1, len(cohort))   # every cohort client gets the model
    per_client = record.get("client_uplink_bytes")
    estimated = not isinstance(per_client, Mapping)
    # Without per-client byte counts (cohorts over server.PER_CLIENT_LIMIT), each client is
    # taken to send the round's mean: uplink_bytes / the clients that reported. Stragglers sent
    # nothing in the simulation; a real federation would get their update late, at the mean size.
    mean_up = record["uplink_bytes"] / max(1, len(arrived))
    up = {c: float(per_client.get(str(c), mean_up)) if not estimated else mean_up
          for c in participants}
    if net.compute == "measured":
        compute = _measured_compute(record, participants)
    elif net.compute == "modelled":
        compute = {c: float(plan.sim_time_s.get(c, 0.0)) for c in participants}
    else:
        compute = {c: 0.0 for c in participants}
    phases = record.get("phases") or {}
    server = float(phases.get("decode", 0.0)) + float(phases.get("aggregate", 0.0))
    timing = round_time(seed, net, participants, {c: down for c in participants}, up, compute, server)
    timing.per_client_bytes_estimated = estimated
    return timing


def simulate_run(run_dir, net_cfg=None) -> List[float]:
    """Per-round seconds (in metrics.jsonl order) a real federation would see for this run.
    net_cfg: a NetworkConfig, a mapping as in a scaling SPEC's `network:` section, or None."""
    net = parse_network(net_cfg)
    run = RunModel(Path(run_dir))
    return [simulate_record(run, rec, net).round_s for rec in run.records()]
