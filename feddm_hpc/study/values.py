"""The numbers of one run (from its config.yaml, metrics.jsonl and final evaluation JSON) and of
one cell (mean and sample std over its seeds, the FD curve over the evaluated rounds)."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

from feddm_hpc.evaluation.report import Run, describe_algorithm, describe_codec, describe_partition, row

# Numbers averaged over a cell's seeds (mean ± sample std in the tables).
NUMERIC = ("fd", "fd_own_data", "kid", "precision", "recall", "coverage", "uplink_ratio",
           "uplink_dense_ratio", "uplink_bytes", "final_train_loss", "wall_s", "near_copy_pixel",
           "near_copy_feature", "nearest_over_test_pixel", "clipped_fraction_mean")
# Every per-run value a paired difference or a plot may use.
RUN_VALUES = NUMERIC + ("epsilon", "noise_multiplier", "clip_norm", "delta", "eval_round")


def mean_std(values: Sequence[Optional[float]]) -> dict:
    """Mean and sample standard deviation (ddof=1; None for fewer than 2 values)."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return {"n": len(xs), "mean": mean, "std": std, "min": min(xs), "max": max(xs)}


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def run_values(run: Run) -> dict:
    """One run's numbers (None where the run lacks them); epsilon is inf for clipping without
    noise, None without DP."""
    base = row(run)
    last = run.metrics[-1] if run.metrics else {}
    final = run.evals[max(run.evals)] if run.evals else {}
    mem = final.get("memorization") or {}
    near = mem.get("near_copy_fraction") or {}
    dist = mem.get("median_nearest_distance") or {}
    ref = (mem.get("reference") or {}).get("median_nearest_distance") or {}
    rel = dist["pixel"] / ref["pixel"] if dist.get("pixel") is not None and ref.get("pixel") else None
    # Partial sharing: each client's own model scored against its own data, mean over clients
    # (feddm_hpc/evaluation/mixture.py). The mixture's FD ("fd") gains from clients that
    # specialise in their classes; this says how good each client's model is where it is used.
    own = (final.get("mixture") or {}).get("fd_own_data_mean")
    eps = last.get("epsilon")
    clip = run.get("privacy.clip_norm")
    return {
        **{k: base[k] for k in ("run", "algorithm", "clients", "partition", "codec", "rounds")},
        **{k: base[k] for k in ("fd", "kid", "precision", "recall", "coverage", "uplink_ratio",
                                "uplink_bytes", "final_train_loss", "wall_s", "eval_round", "N")},
        "fd_own_data": own,
        "epsilon": math.inf if (clip is not None and eps is None) else eps,
        "noise_multiplier": run.get("privacy.noise_multiplier"), "clip_norm": clip,
        "delta": run.get("privacy.delta"),
        "near_copy_pixel": near.get("pixel"), "near_copy_feature": near.get("feature"),
        "nearest_over_test_pixel": rel,
        "clipped_fraction_mean": _mean([r.get("clipped_fraction") for r in run.metrics]),
        "uplink_dense_ratio": _dense_ratio(base["uplink_ratio"], last),
        "aggregation": run.get("server.aggregation", "mean"),
        "attacked": run.get("attack.kind", "none") != "none",
    }


def _dense_ratio(uplink_ratio: Optional[float], last_metrics: dict) -> Optional[float]:
    """Uplink bytes over what float32 updates of the dense model would have sent: the
    float32 baseline of metrics.jsonl counts the shared vector, which low-rank factors, a
    hypernetwork or partial sharing make smaller than the dense model."""
    if uplink_ratio is None:
        return None
    shared, dense = last_metrics.get("shared_params"), last_metrics.get("dense_equivalent_params")
    return uplink_ratio * shared / dense if shared and dense else uplink_ratio


def describe_model(run: Run) -> str:
    """What a client trains and shares, beyond the dense U-Net ("" for it)."""
    kind = run.get("model.parameterization", "dense")
    text = ""
    if kind == "lowrank":
        rank, fraction = run.get("model.lowrank_rank"), run.get("model.lowrank_fraction")
        text = f"low-rank {'rank ' + str(rank) if rank is not None else f'fraction {fraction:g}'}"
    elif kind == "hyper":
        text = "hypernetwork"
    parts = run.get("federation.shared_parts", ["all"])
    if list(parts) != ["all"]:
        text += (", " if text else "") + "shares " + "+".join(parts)
    return text


def describe_setting(run: Run) -> str:
    text = describe_algorithm(run)
    model = describe_model(run)
    if model:
        text += ", " + model
    codec = describe_codec(run)
    if codec != "none":
        if run.get("compression.stochastic_rounding") and run.get("compression.uplink") == "quant":
            codec += " SR"
        if run.get("compression.target") == "weights":
            codec += ", on weights (post-training)"
        text += ", " + codec
    if run.get("client.optimizer") == "sgd":
        text += f", SGD lr {run.get('client.lr')}"
    return text


def cum_train_cpu(run: Run) -> List[float]:
    """Cumulative training CPU seconds (phases.train_cpu) after each metrics line."""
    out, total = [], 0.0
    for rec in run.metrics:
        total += float((rec.get("phases") or {}).get("train_cpu") or 0.0)
        out.append(total)
    return out


def curve(runs: List[Run], y: str = "fd", cpu_s: bool = False) -> List[dict]:
    """Per evaluated round: `y` mean/min/max over the seeds evaluated there, the mean cumulative
    uplink bytes there, and with cpu_s the mean cumulative training CPU seconds (train_cpu_s;
    off by default, so the committed summary.json files keep their keys)."""
    by_round: Dict[int, list] = {}
    for run in runs:
        rounds = [rec.get("round") for rec in run.metrics]
        cum, cpu = dict(zip(rounds, run.cum_uplink())), dict(zip(rounds, cum_train_cpu(run)))
        for k, e in run.evals.items():
            if e.get(y) is not None:
                by_round.setdefault(k, []).append((e[y], cum.get(k), cpu.get(k)))
    out = []
    for k in sorted(by_round):
        ys = [v for v, _, _ in by_round[k]]
        ups = [u for _, u, _ in by_round[k] if u is not None]
        cpus = [c for _, _, c in by_round[k] if c]
        out.append({"round": k, "n": len(ys), f"{y}_mean": sum(ys) / len(ys), f"{y}_min": min(ys),
                    f"{y}_max": max(ys), "uplink_bytes": sum(ups) / len(ups) if ups else None})
        if cpu_s:
            out[-1]["train_cpu_s"] = sum(cpus) / len(cpus) if cpus else None
    return out


def _one_or_all(values: list):
    return values[0] if len(values) == 1 else values


def cell_summary(name: str, runs: List[Run], seeds: List[int]) -> dict:
    """The cell's descriptors and numbers: mean_std per NUMERIC value, the runs' own values."""
    per_run = [run_values(r) for r in runs]
    out = {"cell": name, "seeds": list(seeds), "n": len(runs)}
    if runs:
        first = runs[0]
        settings = sorted({describe_setting(r) for r in runs})
        eval_rounds = sorted({x["eval_round"] for x in per_run}, key=str)
        final_rounds = sorted({(r.get("federation.rounds") or 0) - 1 for r in runs})
        eps = [x["epsilon"] for x in per_run]
        out.update({
            "setting": " / ".join(settings),
            "partition": ("iid (1 client)" if first.get("federation.num_clients") == 1
                          else describe_partition(first)),
            "noise_multiplier": per_run[0]["noise_multiplier"], "clip_norm": per_run[0]["clip_norm"],
            "delta": per_run[0]["delta"], "aggregation": per_run[0]["aggregation"],
            "attacked": per_run[0]["attacked"],
            # epsilon depends only on (N, m, z, rounds, delta): equal for every seed of a cell
            "epsilon": eps[0] if len(set(map(str, eps))) == 1 else eps,
            "eval_round": _one_or_all(eval_rounds), "final_eval": eval_rounds == final_rounds,
            "N": sorted({x["N"] for x in per_run}, key=str)})
    out.update({k: mean_std([x[k] for x in per_run]) for k in NUMERIC})
    out["runs"] = [{**x, "seed": s, "path": str(r.path)} for x, s, r in zip(per_run, seeds, runs)]
    out["curve"] = curve(runs)
    return out
