"""Where evaluation results live (RUN_DIR/eval/round-NNNNNN.json) and their atomic write."""
from __future__ import annotations

import json
from pathlib import Path


def eval_json_path(checkpoint) -> Path:
    """RUN_DIR/eval/round-NNNNNN.json for a checkpoint inside RUN_DIR/checkpoints/, else
    `<checkpoint>.eval.json` next to it."""
    ckpt = Path(checkpoint)
    run_dir = ckpt.parent.parent
    if ckpt.parent.name == "checkpoints" and ((run_dir / "config.yaml").is_file()
                                            or (run_dir / "metrics.jsonl").is_file()):
        return run_dir / "eval" / (ckpt.stem + ".json")
    return ckpt.with_name(ckpt.name + ".eval.json") if ckpt.suffix != ".h5" \
        else ckpt.with_suffix(".eval.json")


def run_eval_path(run_dir, round_index: int) -> Path:
    """Where evaluation during training writes its result for a round."""
    return Path(run_dir) / "eval" / f"round-{round_index:06d}.json"


def write_result(path, result: dict) -> Path:
    """Write a metrics dict (JSON-able entries only) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({k: v for k, v in result.items() if not k.startswith("_")},
                              indent=1) + "\n")
    tmp.replace(path)
    return path
