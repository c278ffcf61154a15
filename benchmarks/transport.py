"""The simulator's communication, coding, aggregation and checkpoint phases against raw MPI
collectives and memory copies of the same bytes, at a small U-Net and at the FedDM paper's
40.35M-parameter CIFAR-10 U-Net (issue 23).

One process tree (2 MPI ranks unless --np; the script starts mpiexec itself when run without
it), one config per model: every case builds the round's real objects through the package (the
model, to size the shared vector; compressor, the uplink, Downlink, the transport,
server.aggregate, checkpoint.save_checkpoint) and drives them for --rounds rounds on synthetic
updates of the right size (no training: the phases below do not depend on what the update
holds, except top-k's selection, which gets Gaussian values). Clients are dealt to ranks
round-robin (client c on rank c % np), so the root hosts clients too, as in a real run.

Per round and rank: broadcast (Downlink.send of the float32 global vector), encode (Uplink.send:
the update local - start and the codec, as in a run; and make_report of each hosted client), then the transport's reduce, which times gather,
decode and aggregate (the root decodes and accumulates in client-id order), then the root
writes a checkpoint (params, EMA, spec, metrics). Afterwards, with the case's buffers freed, the
raw references of the same byte counts on the same ranks: a warm Gatherv (pre-touched
buffers, mpi4py directly), Bcast, Allreduce (for the hierarchical case), np.copyto, and a plain
write + fsync of the checkpoint's arrays.

Printed per case: each phase's bytes, its first (cold) round and its best later (warm) round,
throughput, and throughput as a fraction of its reference; the root's and rank 1's peak RSS
above the RSS before the case (VmHWM, reset per case through /proc/self/clear_refs) against the
round's payload bytes plus 4 model-sized float32 vectors. The last line is
`gather_vs_raw=<warm gather throughput / raw warm Gatherv throughput>` of the 40M float32 case
(of the small one with --small-only).

    .venv/bin/python benchmarks/transport.py --small-only      # a minute
    .venv/bin/python benchmarks/transport.py                   # 40M: ~8 GB of RAM, 2-4 minutes

Timings on a shared machine are noisy: compare the fractions (measured in one run), not
absolute numbers across runs.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
PAPER_UNET = ["model.base_channels=160", "model.channel_mults=[1,2,2]", "model.num_res_blocks=2",
              "model.attention_resolutions=[16]"]
SMALL_UNET = ["model.base_channels=16", "model.channel_mults=[1,2]", "model.num_res_blocks=1",
              "model.attention_resolutions=[]"]
CODECS = {
    "float32": ["compression.uplink=none"],
    "8-bit": ["compression.uplink=quant", "compression.bits=8"],
    "top-k": ["compression.uplink=topk", "compression.topk_fraction=0.01"],
    "float32-hier": ["compression.uplink=none", "system.transport=hierarchical"],
}
GOAL_RSS_VECTORS = 4


# ---------------------------------------------------------------------------- helpers

def status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> int:
    """Resets VmHWM to the current RSS (Linux >= 4.0); returns that RSS in bytes."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return status_kb("VmRSS") * 1024


def peak() -> int:
    return status_kb("VmHWM") * 1024


def touched(nbytes: int) -> np.ndarray:
    buf = np.empty(nbytes, dtype=np.uint8)
    buf.fill(1)
    return buf


def best(times):
    return min(times) if times else float("nan")


def gb(x: float) -> str:
    return f"{x / 1e9:.3f} GB" if x >= 1e8 else f"{x / 1e6:.2f} MB"


def rate(nbytes, seconds) -> float:
    return nbytes / seconds / 1e9 if seconds > 0 else float("inf")


# ---------------------------------------------------------------------------- one case

def build_shared_vector(cfg, shape):
    """(n, params, spec text, fingerprint, image shape) of the config's model for images of
    `shape` (C, H, W), built by the package on every rank (the same seed, so the same vector)."""
    import torch

    from feddm_hpc.federation.setup import build_model
    from feddm_hpc.params import ParamSpec, flatten

    model = build_model(cfg, shape, "cpu")
    spec = ParamSpec.from_model(model)
    params = flatten(model)
    out = (spec.total, params, spec.as_text(), spec.fingerprint(), shape)
    del model
    torch.set_num_threads(1)
    return out


def run_case(comm, cfg, shared, clients: int, rounds: int, ckpt_dir: Path, base: np.ndarray):
    """The simulator's phases for `rounds` rounds; returns this rank's measurements."""
    from feddm_hpc.compression import make_compressor
    from feddm_hpc.config import dump_yaml
    from feddm_hpc.federation.aggregation import WeightedMean
    from feddm_hpc.federation.downlink import Downlink
    from feddm_hpc.federation.reports import make_report
    from feddm_hpc.federation.transports import make_transport
    from feddm_hpc.federation.uplink import build_uplink
    from feddm_hpc.rundir import checkpoint as ckpt

    n, params, spec_text, fingerprint, shape = shared
    rank, size = comm.rank, comm.size
    mine = [c for c in range(clients) if c % size == rank]
    cohort = list(range(clients))
    global_params = params.copy()
    ema = params.copy()
    update = np.empty(n, dtype=np.float32)
    update.fill(0)
    rss0 = reset_peak()

    compressor = make_compressor(cfg.compression)
    uplink = build_uplink(cfg, compressor, n)
    zero = np.zeros(n, dtype=np.float32)   # the start: the uplink's delta then is the update
    downlink = Downlink(cfg.compression, global_params)
    transport = make_transport(cfg.system.transport, n, 0, cfg.compression.target)
    outbox = getattr(transport, "outbox", None)   # the wire-speed transport's send buffer
    if outbox is not None:
        outbox.attach(compressor)
    report_kw = {"outbox": outbox} if outbox is not None else {}
    t = {k: [] for k in ("broadcast", "encode", "gather", "decode", "aggregate", "reduce", "checkpoint")}
    payload_bytes = ckpt_bytes = 0
    for r in range(rounds):
        comm.barrier()
        t0 = time.perf_counter()
        start, _ = downlink.send(comm, global_params)
        t["broadcast"].append(time.perf_counter() - t0)
        reports, enc, payload_bytes = [], 0.0, 0
        for c in mine:
            np.multiply(base, np.float32(1.0 + 0.01 * c), out=update)   # the client's update
            t0 = time.perf_counter()
            payload = uplink.send(c, r, cohort, zero, update).payload
            rep = make_report(c, 100 + c, 0.1, 0.0, payload, (), 0, **report_kw)
            enc += time.perf_counter() - t0
            payload_bytes += rep.uplink_bytes
            reports.append(rep)
            del payload, rep
        t["encode"].append(enc)
        comm.barrier()
        phases = {}
        t0 = time.perf_counter()
        reduced = transport.reduce(comm, reports, start, phases, WeightedMean(r, cohort))
        t["reduce"].append(time.perf_counter() - t0)
        for k in ("gather", "decode", "aggregate"):
            t[k].append(phases.get(k, 0.0))
        if rank == 0:
            assert reduced.aggregate.accepted == cohort, reduced.aggregate.rejected
            lines = [json.dumps({"round": i}) for i in range(r + 1)]
            data = ckpt.CheckpointData(round=r, config_yaml=dump_yaml(cfg), params=global_params,
                                       ema=ema, spec_text=spec_text, param_fingerprint=fingerprint,
                                       metrics_lines=lines, image_shape=shape)
            t0 = time.perf_counter()
            path = ckpt.save_checkpoint(ckpt_dir / ckpt.checkpoint_name(r), data)
            ckpt.prune(ckpt_dir, 1)
            t["checkpoint"].append(time.perf_counter() - t0)
            ckpt_bytes = path.stat().st_size
            del data
        del reports, reduced, start
        comm.barrier()
    peak_rss = peak()
    payload_sizes = [payload_bytes]
    del transport, outbox, compressor, uplink, downlink, update, global_params, ema
    gc.collect()
    return {"t": t, "payload_bytes": payload_bytes, "ckpt_bytes": ckpt_bytes, "rss0": rss0,
            "peak": peak_rss, "clients": len(mine), "sizes": payload_sizes}


def raw_references(comm, n: int, rank_bytes, hier: bool, reps: int, ckpt_dir: Path, params):
    """Warm raw collectives and copies of the case's byte counts; best of `reps`."""
    from mpi4py import MPI

    c = comm.comm
    rank = comm.rank
    sizes = np.array(rank_bytes, dtype=np.int64)
    displs = np.zeros_like(sizes)
    np.cumsum(sizes[:-1], out=displs[1:])
    out = {}
    send = touched(int(sizes[rank]))
    recv = touched(int(sizes.sum())) if rank == 0 else None
    times = []
    for i in range(reps + 1):
        c.Barrier()
        t0 = time.perf_counter()
        c.Gatherv([send, MPI.BYTE], [recv, sizes, displs, MPI.BYTE] if rank == 0 else None, root=0)
        times.append(time.perf_counter() - t0)
    out["gatherv"] = best(times[1:])
    del send, recv
    vec = touched(4 * n)
    times = []
    for i in range(reps + 1):
        c.Barrier()
        t0 = time.perf_counter()
        c.Bcast([vec, MPI.BYTE], root=0)
        times.append(time.perf_counter() - t0)
    out["bcast"] = best(times[1:])
    dst = touched(4 * n)
    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        np.copyto(dst, vec)
        times.append(time.perf_counter() - t0)
    out["memcpy"] = best(times[1:])    # 4n bytes
    del vec, dst
    if hier:
        buf = np.zeros(n + 1, dtype=np.float64)
        times = []
        for i in range(reps + 1):
            c.Barrier()
            t0 = time.perf_counter()
            c.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        out["allreduce"] = best(times[1:])
        del buf
    if rank == 0:
        times = []
        path = ckpt_dir / "raw.bin"
        for i in range(reps):
            t0 = time.perf_counter()
            with open(path, "wb") as fh:
                fh.write(memoryview(params))
                fh.write(memoryview(params))
                fh.flush()
                os.fsync(fh.fileno())
            times.append(time.perf_counter() - t0)
            path.unlink()
        out["write"] = best(times)   # 8n bytes
    c.Barrier()
    gc.collect()
    return out


# ---------------------------------------------------------------------------- report

def report_case(label, n, clients, per_rank, raw, rounds):
    """Prints one case's table; returns (warm gather fraction of raw Gatherv, rows)."""
    root = per_rank[0]
    total_payload = sum(p["payload_bytes"] for p in per_rank)
    vec = 4 * n
    hier = "hier" in label
    t = root["t"]
    print(f"\n== {label}: n={n:,} parameters, {clients} clients on {len(per_rank)} ranks, "
          f"payload {gb(total_payload)} per round ({gb(total_payload / clients)} per client)")
    print(f"   {'phase':<11}{'bytes':>12}{'cold s':>10}{'warm s':>10}{'GB/s':>8}   "
          f"{'reference':<22}{'GB/s':>8}{'fraction':>10}")
    memcpy_rate = rate(vec, raw[0]["memcpy"])
    rows = {}

    def row(name, nbytes, times, ref_name, ref_rate):
        cold = times[0] if times else float("nan")
        warm = best(times[1:]) if len(times) > 1 else cold
        r = rate(nbytes, warm)
        frac = r / ref_rate if ref_rate else float("nan")
        rows[name] = dict(bytes=nbytes, cold=cold, warm=warm, rate=r, ref=ref_name,
                          ref_rate=ref_rate, fraction=frac)
        print(f"   {name:<11}{gb(nbytes):>12}{cold:>10.4f}{warm:>10.4f}{r:>8.2f}   "
              f"{ref_name:<22}{ref_rate:>8.2f}{frac:>10.2f}")

    row("broadcast", vec, t["broadcast"], "raw Bcast", rate(vec, raw[0]["bcast"]))
    for rk, p in enumerate(per_rank):
        row(f"encode r{rk}", vec * p["clients"], p["t"]["encode"], "np.copyto (input)",
            memcpy_rate)
    if hier:
        ab = 8 * (n + 1)
        row("allreduce*", ab, t["gather"], "raw Allreduce", rate(ab, raw[0]["allreduce"]))
    else:
        row("gather", total_payload, t["gather"], "raw warm Gatherv",
            rate(total_payload, raw[0]["gatherv"]))
    row("decode", vec * (clients if not hier else root["clients"]), t["decode"],
        "np.copyto (output)", memcpy_rate)
    if not hier:
        row("aggregate", vec * clients, t["aggregate"], "np.copyto (input)", memcpy_rate)
    row("checkpoint", root["ckpt_bytes"], t["checkpoint"], "write+fsync (raw)",
        rate(8 * n, raw[0]["write"]))
    budget = total_payload + GOAL_RSS_VECTORS * vec
    for rk, p in enumerate(per_rank[:2]):
        grow = p["peak"] - p["rss0"]
        mine = total_payload if rk == 0 else p["payload_bytes"]
        what = "round's payload" if rk == 0 else "its payloads"
        extra = (grow - mine) / vec
        print(f"   peak RSS rank {rk}: +{gb(grow)} above {gb(p['rss0'])} = {what} {gb(mine)} "
              f"+ {extra:.2f} model vectors" + (f" (goal <= payload + {GOAL_RSS_VECTORS} "
                                                 f"vectors = {gb(budget)})" if rk == 0 else ""))
        rows[f"rss{rk}"] = dict(grow=grow, payload=mine, vectors=extra)
    if hier:
        print("   * the hierarchical transport's gather phase: local weighted sums, the Allreduce "
              "and the scalars' gather")
    g = rows.get("gather", rows.get("allreduce*"))
    return g["fraction"], rows


def print_goals(label, rows):
    """Issue 23's goals, judged on the warm rounds of one case."""
    enc = min(rows[k]["fraction"] for k in rows if k.startswith("encode"))
    rss = rows["rss0"]
    ck = rows["checkpoint"]["rate"]
    goals = [("gather >= 50% of the raw warm Gatherv", rows["gather"]["fraction"] >= 0.5,
              f"{rows['gather']['fraction']:.2f}"),
             ("identity encode at memory-copy speed (>= 0.8 of np.copyto)", enc >= 0.8, f"{enc:.2f}"),
             (f"root peak RSS <= payload + {GOAL_RSS_VECTORS} vectors", rss["vectors"] <= GOAL_RSS_VECTORS + 0.05,
              f"payload + {rss['vectors']:.2f}"),
             ("checkpoint writes >= 1 GB/s", ck >= 1.0, f"{ck:.2f} GB/s")]
    print(f"\ngoals ({label}, warm rounds):")
    for what, ok, got in goals:
        print(f"   {'met ' if ok else 'MISS'}  {what}: {got}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-only", action="store_true", help="skip the 40M-parameter U-Net")
    ap.add_argument("--clients", type=int, default=16, help="clients per round (default 16)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per case (first is cold)")
    ap.add_argument("--np", type=int, default=2, help="MPI ranks (default 2)")
    ap.add_argument("--codecs", default=",".join(CODECS),
                    help=f"comma-separated subset of {','.join(CODECS)}")
    ap.add_argument("--timeout", type=float, default=0.0, help="system.collective_timeout_s")
    ap.add_argument("--dir", default=None, help="checkpoint directory (default: a temp dir "
                                                "under the repository's filesystem)")
    ap.add_argument("--json", default=None, help="also write the results here (root)")
    args = ap.parse_args()

    if not any(k in os.environ for k in ("PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")):
        mpiexec = Path(sys.executable).parent / "mpiexec"
        cmd = [str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec") or "mpiexec",
               "-n", str(args.np), sys.executable, "-m", "mpi4py", __file__, *sys.argv[1:]]
        sys.exit(subprocess.call(cmd, cwd=ROOT))

    from feddm_hpc.comm import MPICommunicator
    from feddm_hpc.config import load_config

    comm = MPICommunicator(timeout_s=args.timeout)
    codecs = [c for c in args.codecs.split(",") if c]
    models = [("small", SMALL_UNET, (1, 28, 28))]   # MNIST-sized
    if not args.small_only:
        models.append(("40M", PAPER_UNET, (3, 32, 32)))   # CIFAR-10-sized, as in the paper
    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="transport-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    if comm.rank == 0:
        import feddm_hpc
        print(f"feddm_hpc from {Path(feddm_hpc.__file__).parent}; {comm.size} ranks, "
              f"{args.clients} clients, {args.rounds} rounds per case, timeout {args.timeout:g} s, "
              f"checkpoints in {tmp}")
    results, gather_frac = {}, {}
    for model_name, model_sets, shape in models:
        base_sets = [*model_sets, f"federation.num_clients={args.clients}",
                     f"federation.clients_per_round={args.clients}",
                     f"system.collective_timeout_s={args.timeout}", "system.threads=1"]
        shared = build_shared_vector(load_config(TINY, base_sets), shape)
        n = shared[0]
        base = np.random.default_rng(1234 + comm.rank).standard_normal(n).astype(np.float32)
        base *= np.float32(1e-3)
        for codec in codecs:
            cfg = load_config(TINY, base_sets + CODECS[codec])
            label = f"{model_name} {codec}"
            case_dir = tmp / f"{model_name}-{codec}"
            mine = run_case(comm, cfg, shared, args.clients, args.rounds, case_dir, base)
            rank_bytes = comm.comm.allgather(mine["payload_bytes"])
            raw = raw_references(comm, n, rank_bytes, "hier" in codec, max(2, args.rounds - 1),
                                 case_dir, shared[1])
            gathered = comm.comm.gather((mine, raw), root=0)
            if comm.rank == 0:
                per_rank = [g[0] for g in gathered]
                frac, rows = report_case(label, n, args.clients, per_rank, [g[1] for g in gathered],
                                         args.rounds)
                gather_frac[label] = frac
                results[label] = rows
                sys.stdout.flush()
            shutil.rmtree(case_dir, ignore_errors=True)
        del shared, base
        gc.collect()
    if comm.rank == 0:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        key = "small float32" if args.small_only else "40M float32"
        key = key if key in gather_frac else next(iter(gather_frac), None)
        if key in results:
            print_goals(key, results[key])
        print(f"gather_vs_raw={gather_frac.get(key, float('nan')):.3f}")
    if not args.dir:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
