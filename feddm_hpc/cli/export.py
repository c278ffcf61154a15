"""`feddm-hpc export CHECKPOINT OUT_DIR`: the checkpoint's global EMA model as safetensors weights
and a JSON config (rundir/export.py, docs/export.md)."""
from __future__ import annotations

from feddm_hpc.cli.exits import EXIT_OK


def register(sub) -> None:
    e = sub.add_parser("export", help="write a checkpoint's EMA model as safetensors + JSON config "
                                      "(a diffusers DDPMPipeline folder for diffusers_unet2d)")
    e.add_argument("checkpoint")
    e.add_argument("out_dir", help="folder to write (created; must hold no earlier export)")
    e.set_defaults(run=cmd_export)


def cmd_export(args) -> int:
    from pathlib import Path

    from feddm_hpc.rundir.export import CONFIG, DIFFUSERS_META, export_checkpoint

    info = export_checkpoint(args.checkpoint, args.out_dir)
    out = Path(args.out_dir)
    size = (out / info["weights"]).stat().st_size
    what = f"a diffusers {info['pipeline']} folder, " if "pipeline" in info else ""
    meta = DIFFUSERS_META if "pipeline" in info else CONFIG
    print(f"exported the round {info['round']} EMA model ({info['model']['name']}, "
          f"{info['image_shape']} images) to {out}: {what}{info['weights']} ({size:,} bytes), {meta}")
    return EXIT_OK
