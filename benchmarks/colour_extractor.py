"""Train (or load from the cache) the default colour feature extractor on CIFAR-10 exactly as
`feddm-hpc evaluate` on a configs/cifar10_small.yaml run would, and print its test accuracy and
training time (evaluation/colour_net.py; issue 22 asks for at least 80%).

    .venv/bin/python benchmarks/colour_extractor.py [--path ../shared/data/cifar10-jpeg]

One thread, deterministic, on the CPU: about 250 CPU-seconds an epoch of the 50,000 training
JPEGs on the dev VM, 8 epochs by default (~33 CPU-minutes; measured 83.45% test accuracy), then cached in ~/.cache/feddm_hpc
($FEDDM_HPC_CACHE). The last line is `test_accuracy=<fraction>`.
"""
import argparse
import time
from pathlib import Path

from feddm_hpc.evaluation.reference import load_reference

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg"))
    ap.add_argument("--epochs", type=int, default=None, help="default: the network's own (8)")
    args = ap.parse_args()
    t = time.time()
    # The image options of configs/cifar10_small.yaml: RGB at the files' own 32x32.
    ref = load_reference("image_folder", args.path, verbose=True, epochs=args.epochs,
                         options={"image_size": None, "channels": 3, "center_crop": False})
    e = ref.extractor
    trained = "cached" if e.train_seconds is None else f"trained in {e.train_seconds:.0f} s"
    print(f"{e.name} ({trained}; {time.time() - t:.0f} s in all): {e.path}")
    print(f"test_accuracy={e.test_accuracy:.4f}")


if __name__ == "__main__":
    main()
