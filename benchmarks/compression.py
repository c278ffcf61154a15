"""Compression codecs: ratio vs float32 and single-thread encode/decode throughput.

    python benchmarks/compression.py [--sizes 1100000 35000000] [--repeats 3] [--lossless zlib]
    python benchmarks/compression.py --federated [--config configs/tiny.yaml] [--rounds 3]

--federated runs the simulator in-process (one rank, SerialCommunicator) once per uplink setting
and prints the uplink bytes of every round as metrics.jsonl records them, the ratio to float32,
the downlink bytes and the final training loss.

Throughput is GB/s of float32 input (4 bytes per parameter), best of --repeats runs. The input is
a random normal vector scaled like a model update (std 1e-3). Error-feedback encode includes the
decode it needs to update the residual.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import typing

# Single thread, as one rank per core runs it; must be set before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from feddm_hpc.compression import make_compressor, payload_bytes_float32  # noqa: E402
from feddm_hpc.config import CompressionConfig  # noqa: E402

# compression.lossless's valid values, from the config's Literal type.
LOSSLESS = typing.get_args(typing.get_type_hints(CompressionConfig)["lossless"])

CODECS = [
    ("none", dict(uplink="none")),
    ("fp16", dict(uplink="quant", bits=16, fp16_format="fp16")),
    ("bf16", dict(uplink="quant", bits=16, fp16_format="bf16")),
    ("8-bit", dict(uplink="quant", bits=8)),
    ("8-bit stoch", dict(uplink="quant", bits=8, stochastic_rounding=True)),
    ("4-bit", dict(uplink="quant", bits=4)),
    ("4-bit stoch", dict(uplink="quant", bits=4, stochastic_rounding=True)),
    ("2-bit", dict(uplink="quant", bits=2)),
    ("2-bit stoch", dict(uplink="quant", bits=2, stochastic_rounding=True)),
    ("4-bit + EF", dict(uplink="quant", bits=4, error_feedback=True)),
    ("topk 1%", dict(uplink="topk", topk_fraction=0.01)),
    ("topk 10%", dict(uplink="topk", topk_fraction=0.10)),
]


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(n: int, repeats: int, chunk: int, method: str) -> None:
    x = (np.random.default_rng(0).standard_normal(n, dtype=np.float32) * 1e-3)
    gb = payload_bytes_float32(n) / 1e9
    print(f"\nn = {n:,} float32 ({gb * 1e3:.1f} MB), chunk {chunk}, lossless {method}, "
          f"best of {repeats}")
    print(f"{'codec':<14}{'bytes':>13}{'ratio':>9}{'enc GB/s':>10}{'dec GB/s':>10}"
          f"{'max |err|':>12}")
    for label, cfg in CODECS:
        comp = make_compressor(CompressionConfig(**cfg, chunk_size=chunk, lossless=method))
        payload = comp.encode(x, 0, np.random.default_rng(1))
        t_enc = best_time(lambda: comp.encode(x, 0, np.random.default_rng(1)), repeats)
        t_dec = best_time(lambda: comp.decode(payload, n), repeats)
        err = float(np.abs(comp.decode(payload, n) - x).max())
        ratio = payload_bytes_float32(n) / payload.size
        print(f"{label:<14}{payload.size:>13,}{ratio:>9.2f}{gb / t_enc:>10.2f}"
              f"{gb / t_dec:>10.2f}{err:>12.2e}")


FEDERATED = [
    ("fp32", []),
    ("8-bit", ["compression.uplink=quant", "compression.bits=8"]),
    ("4-bit + EF", ["compression.uplink=quant", "compression.bits=4",
                    "compression.error_feedback=true"]),
    ("topk 1% + EF", ["compression.uplink=topk", "compression.topk_fraction=0.01",
                      "compression.error_feedback=true"]),
    ("4-bit + EF, 8-bit down", ["compression.uplink=quant", "compression.bits=4",
                                "compression.error_feedback=true", "compression.downlink=quant",
                                "compression.downlink_bits=8"]),
]


def federated(config: str, rounds: int) -> None:
    import io
    import json
    import tempfile
    from pathlib import Path

    from feddm_hpc.comm import SerialCommunicator
    from feddm_hpc.config import load_config
    from feddm_hpc.federation.simulation import Simulation
    from feddm_hpc.rundir.runlog import RunLog

    base = ["system.threads=1", "system.progress=false", "sampling.num_samples=0",
            f"federation.rounds={rounds}"]
    print(f"\nfederated: {os.path.relpath(config)}, {rounds} rounds, 1 rank; bytes per round as in metrics.jsonl")
    print(f"{'uplink':<24}{'uplink bytes per round':>34}{'ratio':>8}{'downlink/round':>16}"
          f"{'loss':>8}{'s':>7}")
    for label, overrides in FEDERATED:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp)
            cfg = load_config(config, base + overrides)
            t0 = time.perf_counter()
            log = RunLog(0, run_dir, progress=False, stream=io.StringIO())  # quiet set-up lines
            sim = Simulation(cfg, SerialCommunicator(), run_dir, log)
            sim.run()
            wall = time.perf_counter() - t0
            recs = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
        up = [r["uplink_bytes"] for r in recs]
        ratio = sum(r["uplink_float32_bytes"] for r in recs) / sum(up)
        print(f"{label:<24}{' '.join(f'{b:,}' for b in up):>34}{ratio:>8.2f}"
              f"{recs[-1]['downlink_bytes']:>16,}{recs[-1]['train_loss']:>8.4f}{wall:>7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_100_000, 35_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=1024)  # not the config default (4096): as before
    ap.add_argument("--lossless", default="none", choices=LOSSLESS)
    ap.add_argument("--federated", action="store_true",
                    help="compare uplink settings in the simulator instead of the codec timings")
    ap.add_argument("--config", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     "..", "configs", "tiny.yaml"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.federated:
        federated(args.config, args.rounds)
        return
    for n in args.sizes:
        run(n, args.repeats, args.chunk, args.lossless)


if __name__ == "__main__":
    main()
