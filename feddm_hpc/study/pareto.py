"""The Pareto front of a study's cells in two per-run values (lower is better in both, e.g.
final FD against uplink bytes): a cell is on the front when no other cell is at least as good in
both means and strictly better in one. Used by `kind: pareto` plots and their notes."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple


def cell_point(summary: dict, x: str, y: str) -> Optional[Tuple[float, float]]:
    """(mean x, mean y) over the cell's seeds, None where either is missing."""
    if not summary.get("n"):
        return None
    mx, my = summary[x]["mean"], summary[y]["mean"]
    return None if mx is None or my is None else (float(mx), float(my))


def pareto_front(points: Dict[str, Tuple[float, float]]) -> List[str]:
    """The non-dominated cells, in increasing x (ties: increasing y, then name)."""
    front = []
    for name, (x, y) in points.items():
        dominated = any(ox <= x and oy <= y and (ox < x or oy < y)
                        for other, (ox, oy) in points.items() if other != name)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: (points[n][0], points[n][1], n))


def panel_fronts(plot, summaries: Dict[str, dict]) -> List[dict]:
    """Per panel of a pareto plot: its points and front (for the note and summary.json)."""
    out = []
    for title, cells in plot.panels:
        points = {c: p for c in cells if (p := cell_point(summaries[c], plot.x, plot.y[0]))}
        out.append({"plot": plot.file, "panel": title, "x": plot.x, "y": plot.y[0],
                    "front": pareto_front(points),
                    "points": {c: list(p) for c, p in points.items()}})
    return out


def front_text(info: dict) -> str:
    where = f"{info['plot']}" + (f", {info['panel']}" if info["panel"] else "")
    items = ", ".join(f"{c} ({info['points'][c][0]:.4g}, {info['points'][c][1]:.4g})"
                      for c in info["front"])
    return (f"Pareto front of mean {info['y']} against mean {info['x']} ({where}; lower is better "
            f"in both): {items or 'no cell with both values'}")
