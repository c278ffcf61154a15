"""The spec's `grid:` shorthand: cells as the product of axes, the first axis varying slowest.

    grid:
      codec:                          # a named axis: value name -> overrides (config keys, and
        float32: {compression.uplink: none}      #  the cell keys ranks and threads)
        q8: {compression.uplink: quant, compression.bits: 8}
      federation.num_clients: [4, 8]  # a config key: its values (name part `num_clients4`)
      ranks: [1, 2]                   # MPI ranks of the cell (name part `np1`)
      threads: [1, 2]                 # torch threads per rank (name part `t1`)

A grid cell is named by its axes' parts joined with `-` (`q8-num_clients4-np2`). A combination
that cannot run is skipped and reported, not an error: more ranks than clients, or a
clients_per_round above num_clients (the scaling grids of issue 20 list such products).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import List, Optional, Tuple

from feddm_hpc.config.choices import require
from feddm_hpc.study import fields as f

CELL_KEYS = ("ranks", "threads")          # cell keys besides seeds that are not config keys


@dataclass(frozen=True)
class GridCell:
    name: str
    body: dict                            # as an explicit cell's body: config keys, ranks, threads
    axes: Tuple[Tuple[str, str], ...]     # (axis, value name)


def _part(axis: str, value, where: str) -> str:
    if axis == "ranks":
        return f"np{value}"
    if axis == "threads":
        return f"t{value}"
    text = "null" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
    part = f"{axis.rsplit('.', 1)[-1]}{text}"
    require(all(c.isalnum() or c in "._+" for c in part),
            f"{where}: value {value!r} cannot be part of a cell name: use a named axis "
            f"({axis.rsplit('.', 1)[-1]}: {{NAME: {{{axis}: VALUE}}}})")
    return part


def _axis(axis: str, value, where: str) -> List[Tuple[str, dict]]:
    """[(value name, overrides)] of one axis."""
    if axis in CELL_KEYS:
        return [(_part(axis, v, where), {axis: v}) for v in f.int_list(value, where, 1)]
    if "." in axis:
        items = value if isinstance(value, list) else [value]
        require(bool(items), f"{where}: expected a non-empty list of values")
        out = [(_part(axis, v, f"{where}[{i}]"), {axis: v}) for i, v in enumerate(items)]
        names = [n for n, _ in out]
        require(len(set(names)) == len(names), f"{where}: repeated values {items}")
        return out
    if isinstance(value, list):   # a list of names: entries without overrides
        value = {str(v): {} for v in value}
    data = f.mapping(value, where, allow_none=False)
    require(bool(data), f"{where}: expected at least one entry")
    out = []
    for name, body in data.items():
        require(all(c.isalnum() or c in "._+" for c in name) and name[0].isalnum(),
                f"{where}.{name}: an entry name is part of a cell name: letters, digits and . _ +")
        out.append((name, f.mapping(body, f"{where}.{name}")))
    return out


def expand(value) -> List[GridCell]:
    data = f.mapping(value, "grid", allow_none=False)
    require(bool(data), "grid: expected at least one axis")
    axes = [(axis, _axis(axis, v, f"grid.{axis}")) for axis, v in data.items()]
    cells = []
    for combo in itertools.product(*(entries for _, entries in axes)):
        body: dict = {}
        for (axis, _), (_, overrides) in zip(axes, combo):
            for key, v in overrides.items():
                require(key not in body, f"grid.{axis}: sets {key}, which another axis sets too")
                body[key] = v
        names = tuple((axis, name) for (axis, _), (name, _) in zip(axes, combo))
        cells.append(GridCell("-".join(n for _, n in names), body, names))
    return cells


def unrunnable(message: str) -> Optional[str]:
    """Why a grid combination cannot run, from its config error (None: a real mistake)."""
    if message.startswith("federation.clients_per_round: must be between 1 and"):
        return "clients_per_round exceeds num_clients"
    return None
