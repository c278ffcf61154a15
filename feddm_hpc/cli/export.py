"""`feddm-hpc export CHECKPOINT OUT_DIR`: the checkpoint's global EMA model as safetensors weights
and a JSON config (rundir/export.py, docs/export.md)."""
from __future__ import annotations

from feddm_hpc.cli.exits import EXIT_OK


def register(sub) -> None:
    e = sub.add_parser("export", help="write a checkpoint's EMA model as safetensors + JSON config")
    e.add_argument("checkpoint")
    e.add_argument("out_dir", help="folder to write (created; must hold no earlier export)")
    e.set_defaults(run=cmd_export)


def cmd_export(args) -> int:
    from pathlib import Path

    from feddm_hpc.rundir.export import CONFIG, WEIGHTS, export_checkpoint

    info = export_checkpoint(args.checkpoint, args.out_dir)
    out = Path(args.out_dir)
    size = (out / WEIGHTS).stat().st_size
    model = info["model"]
    print(f"exported the round {info['round']} EMA model ({model['name']}, "
          f"{info['image_shape']} images) to {out}: {WEIGHTS} ({size:,} bytes), {CONFIG}")
    return EXIT_OK
