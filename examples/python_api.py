"""feddm_hpc's Python API in one script: train a small federated run, look at its metrics, draw
samples, score them, and train further.

    python examples/python_api.py [RUN_DIR]                          # one process
    mpiexec -n 2 python -m mpi4py examples/python_api.py [RUN_DIR]   # the same run on 2 ranks

Under mpiexec every rank runs this script; train, resume and evaluate are collective and return
the same Run on every rank, the printing is left to rank 0. About a minute on one CPU core.
"""
import sys
from pathlib import Path

from feddm_hpc import api
from feddm_hpc.rundir.imaging import save_image_grid

ROOT = Path(__file__).resolve().parents[1]


def main(run_dir: str) -> None:
    # configs/tiny.yaml: 4 clients, a tiny U-Net, 2,000 MNIST images; overrides as a dict.
    cfg = api.load_config(ROOT / "configs" / "tiny.yaml",
                          {"federation.rounds": 2, "system.progress": False})
    run = api.train(cfg, run_dir)
    rank0 = api.is_root()
    if rank0:
        for line in run.metrics:
            print(f"round {line['round']}: loss {line['train_loss']:.4f}, "
                  f"uplink {line['uplink_bytes']:,} bytes")

    # Samples from the latest checkpoint's EMA model, as `feddm-hpc sample` draws them.
    if rank0:
        images = api.sample(run.latest_checkpoint, num=16)
        save_image_grid(images, Path(run_dir) / "api_samples.png")
        print(f"16 samples {images.shape}, range [{images.min():.2f}, {images.max():.2f}]")

    # Sample quality in LeNet features; small and quick here (compare runs at equal N only).
    scores = api.evaluate(run.latest_checkpoint, num_samples=64, steps=10, extractor_epochs=1,
                          extractor_train_subset=500, no_memorization=True)
    if rank0:
        print(f"FD {scores['fd']:.1f}, KID {scores['kid']:.4f} at N={scores['num_samples']}")

    # Train further: two more rounds (the cosine schedule's horizon moves: resume says so).
    run = api.resume(run_dir, {"federation.rounds": 4})
    if rank0:
        print(f"rounds now: {[line['round'] for line in run.metrics]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/python_api")
