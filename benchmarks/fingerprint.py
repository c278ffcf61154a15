"""Fingerprints of short runs, for refactorings that must leave results bit-identical.

Trains configs/tiny.yaml under a set of strategy / codec / transport cases through the real CLI
(1 process, and 2 ranks under mpiexec), then prints one line per case and rank count: SHA-256
prefixes of the final params, EMA, strategy state, per-client state and metrics.jsonl with its
timing fields removed. Run it before and after a change and diff the outputs:

    .venv/bin/python benchmarks/fingerprint.py > /tmp/before.txt
    ... change ...
    .venv/bin/python benchmarks/fingerprint.py > /tmp/after.txt && diff /tmp/before.txt /tmp/after.txt

Gather-transport lines must also agree between 1 and 2 ranks (rank-count invariance); the
hierarchical transport sums per rank and is not bitwise rank-invariant, so only its
before/after lines are comparable.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
SGD = ["client.optimizer=sgd", "client.momentum=0", "client.grad_clip=null", "client.lr=0.05"]
CASES = {
    "fedavg": [],
    "fedprox-q8-ef": ["federation.algorithm=fedprox", "client.prox_mu=0.1", "compression.uplink=quant",
                      "compression.bits=8", "compression.error_feedback=true"],
    "fedavg-prox-mu": ["client.prox_mu=0.05"],
    "scaffold-q4-ef-dropout": ["federation.algorithm=scaffold", *SGD, "compression.uplink=quant",
                               "compression.bits=4", "compression.error_feedback=true",
                               "federation.dropout_prob=0.3", "federation.clients_per_round=3"],
    "scaffold-weights": ["federation.algorithm=scaffold", *SGD, "compression.target=weights"],
    "fedadam-topk-ef-downlink4": ["federation.algorithm=fedadam", "compression.uplink=topk",
                                  "compression.topk_fraction=0.1", "compression.error_feedback=true",
                                  "compression.downlink=quant", "compression.downlink_bits=4"],
    "fedyogi-bf16-weights": ["federation.algorithm=fedyogi", "compression.uplink=quant",
                             "compression.bits=16", "compression.fp16_format=bf16",
                             "compression.target=weights"],
    "fedavg-nan-client": ["federation.inject_nan_clients=[1]", "compression.uplink=quant"],
    "hier-fedavgm": ["system.transport=hierarchical", "federation.algorithm=fedavgm"],
    "hier-scaffold": ["system.transport=hierarchical", "federation.algorithm=scaffold", *SGD],
    "personalize": ["personalization.steps=2", "personalization.eval_size=8"],
    # Parameterizations and dropout: their kernels (the hypernetwork's small matrix products,
    # dropout's global generator) are the first to show a change in how parameters are stored
    # or seeded (an aliased parameter buffer once changed the hypernetwork's last bits).
    "lowrank-q8": ["model.parameterization=lowrank", "model.lowrank_fraction=0.25",
                   "compression.uplink=quant", "compression.bits=8"],
    "hyper": ["model.parameterization=hyper"],
    "dropout": ["model.dropout=0.1"],
}
TIMING = {"wall_s", "phases", "sim_round_s", "client_train_s_max", "elapsed_s"}


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def group_digest(f, name) -> str:
    if name not in f:
        return "-"
    h = hashlib.sha256()

    def visit(key, obj):
        if isinstance(obj, h5py.Dataset):
            h.update(key.encode() + obj[()].tobytes())
    f[name].visititems(visit)
    return h.hexdigest()[:12]


def run_case(name, extra, nprocs, work: Path) -> str:
    run_dir = work / f"{name}-np{nprocs}"
    sets = [a for s in ["system.threads=1", "system.progress=false", "sampling.num_samples=0",
                        "federation.rounds=3", *extra] for a in ("--set", s)]
    cmd = [sys.executable, "-m", "feddm_hpc", "train", str(TINY), "--run-dir", str(run_dir), *sets]
    if nprocs > 1:
        cmd = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(nprocs), sys.executable,
               "-m", "mpi4py", *cmd[1:]]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        return f"{name} np={nprocs} FAILED rc={out.returncode}: {out.stderr.strip()[-300:]}"
    ckpt = sorted((run_dir / "checkpoints").glob("round-*.h5"))[-1]
    with h5py.File(ckpt, "r") as f:
        params, ema = f["global/params"][()], f["global/ema"][()]
        strategy, clients = group_digest(f, "strategy"), group_digest(f, "clients")
    lines = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = {k: v for k, v in json.loads(line).items() if k not in TIMING}
        lines.append(json.dumps(rec, sort_keys=True))
    metrics = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
    extra_files = ""
    pers = run_dir / "personalization.json"
    if pers.exists():
        extra_files = " personalization=" + hashlib.sha256(pers.read_bytes()).hexdigest()[:12]
    return (f"{name} np={nprocs} params={digest(params)} ema={digest(ema)} strategy={strategy} "
            f"clients={clients} metrics={metrics}{extra_files}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="substring filter on case names")
    ap.add_argument("--np", default="1,2", help="rank counts, comma-separated")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="an override added to every case (e.g. system.pipeline_clients=true: an "
                         "option that must not change any result gives the same lines)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in CASES.items():
            if args.only and args.only not in name:
                continue
            for n in (int(x) for x in args.np.split(",")):
                if name.startswith("hier") and n == 1:
                    continue
                print(run_case(name, [*extra, *args.overrides], n, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
