"""Root-only side effects: log lines, the progress line and metrics.jsonl go through here.

Every rank builds a RunLog; only the root's writes anything (EDM's print0, nanoGPT's
master_process). Rank-specific messages use `rank_warn`, which every rank may call.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000.0
    return f"{n}"


def _human_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class RunLog:
    def __init__(self, rank: int, run_dir: Optional[Path], progress: bool = True, stream=None):
        self.rank = rank
        self.is_root = rank == 0
        self.run_dir = run_dir
        self.stream = stream or sys.stderr
        self.progress = progress
        self.metrics_lines: List[str] = []
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def info(self, message: str) -> None:
        if self.is_root:
            self._end_progress_line()
            print(f"[feddm_hpc] {message}", file=self.stream, flush=True)

    def rank_warn(self, message: str) -> None:
        """A message where the rank matters (device, a skipped file seen by one rank)."""
        print(f"[feddm_hpc rank {self.rank}] {message}", file=self.stream, flush=True)

    def _end_progress_line(self) -> None:
        if self._tty and getattr(self, "_open_line", False):
            print(file=self.stream)
            self._open_line = False

    def round_done(self, record: dict, total_rounds: int, started: float, start_round: int) -> None:
        if not self.is_root:
            return
        line = json.dumps(record, sort_keys=False)
        self.metrics_lines.append(line)
        if self.run_dir is not None:
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(line + "\n")
        if not self.progress:
            return
        done = record["round"] - start_round + 1
        elapsed = time.perf_counter() - started
        eta = elapsed / done * (total_rounds - record["round"] - 1)
        width = 20
        filled = int(width * (record["round"] + 1) / total_rounds)
        loss = record["train_loss"]  # None: no client update was aggregated this round
        text = (f"[{'#' * filled}{'.' * (width - filled)}] round {record['round'] + 1}/{total_rounds} "
                f"loss {'n/a' if loss is None else f'{loss:.4f}'} up {_human_bytes(record['uplink_bytes'])} "
                f"down {_human_bytes(record['downlink_bytes'])} {record['wall_s']:.1f}s/round "
                f"eta {_human_time(eta)}")
        if self._tty:
            print("\r" + text, end="", file=self.stream, flush=True)
            self._open_line = True
        else:
            print(text, file=self.stream, flush=True)

    def reset_metrics(self, lines: List[str]) -> None:
        """On resume: metrics.jsonl becomes exactly the checkpoint's rounds (later ones are redone).

        The file's own lines for those rounds are kept when present: they also hold the
        checkpoint write time, which the checkpoint's copy cannot know.
        """
        existing = []
        if self.run_dir is not None and (self.run_dir / "metrics.jsonl").is_file():
            existing = (self.run_dir / "metrics.jsonl").read_text().splitlines()[:len(lines)]
        rounds = lambda ls: [json.loads(l)["round"] for l in ls]  # noqa: E731
        if len(existing) == len(lines) and rounds(existing) == rounds(lines):
            lines = existing
        self.metrics_lines = list(lines)
        if self.is_root and self.run_dir is not None:
            tmp = self.run_dir / "metrics.jsonl.tmp"
            tmp.write_text("".join(line + "\n" for line in lines))
            tmp.replace(self.run_dir / "metrics.jsonl")

    def close(self) -> None:
        if self.is_root:
            self._end_progress_line()
