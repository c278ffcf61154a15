"""The report's table columns: each a name (used in the spec), a default header and how a cell's
summary (values.cell_summary) is written in it. Numbers are mean ± sample std over seeds."""
from __future__ import annotations

import math
from typing import Dict, List, Optional

from feddm_hpc.evaluation.report import _bytes
from feddm_hpc.study.values import RUN_VALUES

__all__ = ["COLUMNS", "DEFAULT_COLUMNS", "RUN_VALUES", "markdown_table", "num", "pm"]

# name -> default header
COLUMNS = {
    "cell": "cell", "label": "label", "setting": "setting", "partition": "partition",
    "seeds": "seeds", "seed_list": "seeds", "fd": "final FD",
    "fd_own_data": "clients' FD on own data", "kid": "KID",
    "precision": "precision", "recall": "recall", "coverage": "coverage",
    "uplink_ratio": "uplink / float32", "uplink_dense_ratio": "uplink / dense float32",
    "uplink_bytes": "uplink total",
    "eval_round": "eval round", "eval_n": "eval N", "z": "z", "clip_norm": "clip norm",
    "epsilon": "epsilon (delta)", "near_copy_pixel": "near copies, pixel",
    "near_copy_feature": "near copies, feature", "nearest_over_test_pixel": "nearest dist. / test's",
    "clipped_fraction": "clipped share", "final_train_loss": "final loss", "wall_s": "wall time (s)",
}
DEFAULT_COLUMNS = ("cell", "setting", "partition", "seeds", "fd", "kid", "recall", "coverage",
                   "uplink_ratio", "uplink_bytes", "eval_round", "eval_n")
# mean ± std columns: the summary key and the significant digits of the mean
STATS = {"fd": ("fd", 4), "fd_own_data": ("fd_own_data", 4), "kid": ("kid", 4),
         "precision": ("precision", 3), "recall": ("recall", 3), "coverage": ("coverage", 3),
         "near_copy_pixel": ("near_copy_pixel", 3), "near_copy_feature": ("near_copy_feature", 3),
         "nearest_over_test_pixel": ("nearest_over_test_pixel", 3),
         "clipped_fraction": ("clipped_fraction_mean", 3),
         "final_train_loss": ("final_train_loss", 4), "wall_s": ("wall_s", 4)}


def num(v, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}g}"


def _rounding_only(stat: dict) -> bool:
    """No spread, or one of float rounding only (seeds with equal values but for the last bit)."""
    return not stat["std"] or stat["std"] <= 1e-9 * abs(stat["mean"])


def pm(stat: dict, digits: int = 4) -> str:
    if stat["mean"] is None:
        return "–"
    if stat["std"] is None:
        return num(stat["mean"], digits)
    std = 0.0 if _rounding_only(stat) else stat["std"]
    return f"{num(stat['mean'], digits)} ± {num(std, 2)}"


def _eps_text(eps) -> str:
    if eps is None:
        return "no DP"
    if isinstance(eps, list):
        return ", ".join(_eps_text(e) for e in eps)
    return "∞ (no noise)" if eps == math.inf else f"{eps:.4g}"


def _value(name: str, s: Optional[dict], digits: Optional[int]) -> str:
    if s is None:
        return "–"
    if name in STATS:
        key, default = STATS[name]
        return pm(s[key], digits or default)
    if s["n"] == 0 and name not in ("cell", "seeds"):
        return "–"
    if name == "cell":
        return s["cell"]
    if name in ("setting", "partition"):
        return s[name]
    if name == "seeds":
        return f"{s['n']} ({', '.join(str(x) for x in s['seeds'])})"
    if name in ("uplink_ratio", "uplink_dense_ratio"):
        r = s[name]
        if r["mean"] is None:
            return "–"
        return f"{r['mean']:.3f}" if _rounding_only(r) else f"{r['mean']:.3f} ± {r['std']:.2g}"
    if name == "uplink_bytes":
        return _bytes(s["uplink_bytes"]["mean"])
    if name == "eval_round":
        er = s["eval_round"]
        return str(er + 1) if isinstance(er, int) else str(er)   # counted from 1 in the table
    if name == "eval_n":
        return ", ".join(str(n) for n in s["N"])
    if name in ("z", "clip_norm"):
        v = s["noise_multiplier" if name == "z" else "clip_norm"]
        return "–" if s["clip_norm"] is None or v is None else f"{v:g}"
    if name == "epsilon":
        delta = f" ({s['delta']:g})" if s["clip_norm"] is not None else ""
        return _eps_text(s["epsilon"]) + delta
    raise AssertionError(f"column {name} has no writer")


def markdown_table(table, summaries: Dict[str, dict]) -> str:
    """`table` (report_spec.Table) with its cells' summaries: one Markdown line per row."""
    cols = table.columns
    lines = ["| " + " | ".join(c.header for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.rows:
        roles = dict(row.cells)
        texts: List[str] = []
        for c in cols:
            if c.value == "label":
                texts.append(row.label)
            elif c.value == "seed_list":   # the seeds of the row's cells (or of one role's)
                cells = [cell for _, cell in row.cells] if c.of is None else [roles.get(c.of)]
                seeds = {x for cell in cells if cell in summaries for x in summaries[cell]["seeds"]}
                texts.append(", ".join(map(str, sorted(seeds))))
            else:
                cell = roles.get(c.of) if c.of is not None else row.cells[0][1]
                texts.append(_value(c.value, summaries.get(cell), c.digits))
        lines.append("| " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"
