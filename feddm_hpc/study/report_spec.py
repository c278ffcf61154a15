"""The spec's `report:` section: what `feddm-hpc study --collect` writes. Every cell it names must
be a cell of the spec; the package itself names none.

    report:
      title: FedDM multi-seed study          # table.md's heading (default: "Study <name>")
      text: Final round, mean ± sample std over seeds.   # a paragraph under it (optional)
      tables:                                # default: one table of every cell, default columns
        - title: Client-level DP             # a "## " heading (optional)
          rows: [nodp, clip]                 # default: every cell, in the spec's order; a row of
                                             # several cells: {label: mean, clean: mean-clean,
                                             #                 attacked: mean-attacked}
          columns: [cell, seeds, fd, kid]    # names of tables.COLUMNS, or {value: NAME, of: ROLE,
                                             # header: TEXT, digits: N} (of: a role of the row)
      notes:                                 # bullets under the tables: text, {auto: KIND}
        - auto: comparability                # (KIND: comparability, final_eval, seed_counts), or
        - mean ± sample std over seeds       # {sweep: {title, cells, key, label}}: the sweep's
                                             # mean final FD per value of `key`, and the best one
                                             # (over the seeds every value has, if they differ)
      paired:                                # paired differences with 95% Student-t intervals
        metric: fd                           # a per-run value (tables.RUN_VALUES)
        title: Paired differences (final FD, same seeds)
        text: ΔFD = FD(cell) - FD(baseline) per seed; positive is worse.
        pairs: [[q8, fedavg], [q4ef, fedavg]]   # [cell, baseline], seeds both have
      series:                                # legend label -> its cells and optional style
        fedavg: {cells: [fedavg-iid, fedavg-shards], color: C0, linestyle: "-", marker: o}
      link_plots: true                       # a "## Plots" section in table.md linking them
      plots_text: Lines - mean over seeds.   # under its heading
      plots:
        - {file: fd_vs_round.png, kind: curve, x: round, y: fd, title: FD per round,
           xlabel: round, ylabel: FD, panels: {iid: [fedavg-iid], shards: [fedavg-shards]}}
        - {file: fd_vs_epsilon.png, kind: scatter, x: epsilon, y: [fd], ylabels: [final FD],
           xlabel: epsilon, title: ..., cells: [nodp, dp-z1]}

A curve plot draws per cell the mean over seeds of `y` at each evaluated round (band: min..max)
against the round or the cumulative uplink bytes (x: round | uplink_bytes); a scatter plot draws
one point per run; a pareto plot (kind: pareto, x: a run value, y: fd, panels) one point per cell
(seed means, min..max bars) and the cells' Pareto front, also listed in a note and summary.json.
Unstyled series take tab10 colours in the order of `series`.

    report:                                  # or the scaling measurements (feddm_hpc/study/
      kind: scaling                          # scaling.py): scaling.csv, table.md and the plots
      title: Scaling on 2 cores              # strong/weak scaling, phases, bytes; no evaluation
      warmup_rounds: 1                       # first rounds left out of the per-round means
      network: {uplink_mbps: {median: 10, sigma: 0.5}, ...}   # scaling/network.py's model

A curve's x may also be `train_cpu_s`: the run's cumulative training CPU seconds (phases.train_cpu).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from feddm_hpc.config.choices import require
from feddm_hpc.study import fields as f
from feddm_hpc.study.tables import COLUMNS, DEFAULT_COLUMNS, RUN_VALUES

REPORT_KEYS = ("kind", "title", "text", "tables", "notes", "paired", "series", "plots_text",
               "link_plots", "plots")
SCALING_KEYS = ("kind", "title", "text", "warmup_rounds", "network")
KINDS = ("fd", "scaling")
AUTO_NOTES = ("comparability", "final_eval", "seed_counts")
CURVE_X = ("round", "uplink_bytes", "train_cpu_s")


@dataclass(frozen=True)
class Column:
    value: str
    header: str
    of: Optional[str] = None        # the row's role whose cell gives the value
    digits: Optional[int] = None


@dataclass(frozen=True)
class Row:
    label: str
    cells: Tuple[Tuple[str, str], ...]      # (role, cell); one cell: (("", cell),)


@dataclass(frozen=True)
class Table:
    title: Optional[str]
    rows: Tuple[Row, ...]
    columns: Tuple[Column, ...]


@dataclass(frozen=True)
class Note:
    text: Optional[str] = None
    auto: Optional[str] = None
    sweep: Optional[Tuple[str, Tuple[str, ...], str, str]] = None   # title, cells, key, label


@dataclass(frozen=True)
class Paired:
    metric: str
    title: str
    text: str
    pairs: Tuple[Tuple[str, str], ...]


@dataclass(frozen=True)
class Series:
    label: str
    cells: Tuple[str, ...]
    style: Tuple[Tuple[str, str], ...]      # (matplotlib keyword, value)


@dataclass(frozen=True)
class Plot:
    file: str
    kind: str
    x: str
    y: Tuple[str, ...]
    title: str
    xlabel: str
    ylabels: Tuple[str, ...]
    panels: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()    # curve: (title, cells)
    cells: Tuple[str, ...] = ()                             # scatter


@dataclass(frozen=True)
class Report:
    title: Optional[str]
    text: Optional[str]
    tables: Tuple[Table, ...]
    notes: Tuple[Note, ...]
    paired: Optional[Paired]
    series: Tuple[Series, ...]
    plots_text: Optional[str]
    link_plots: bool
    plots: Tuple[Plot, ...]
    kind: str = "fd"
    warmup_rounds: int = 0          # kind scaling: rounds left out of the per-round means
    network: Any = None             # kind scaling: scaling.network.NetworkConfig


def _cell(value, where: str, cells: Sequence[str]) -> str:
    value = f.string(value, where)
    require(value in cells, f"{where}: unknown cell {value!r} (cells: {', '.join(cells)})")
    return value


def _cells(value, where: str, cells: Sequence[str]) -> Tuple[str, ...]:
    return tuple(_cell(v, f"{where}[{i}]", cells) for i, v in enumerate(f.str_list(value, where)))


def _row(value, where: str, cells: Sequence[str]) -> Row:
    if isinstance(value, str):
        return Row(value, (("", _cell(value, where, cells)),))
    data = f.mapping(value, where, allow_none=False)
    require("label" in data, f"{where}.label: required in a row of several cells")
    label = f.string(str(data.pop("label")), f"{where}.label")
    require(bool(data), f"{where}: expected role: cell entries besides label")
    return Row(label, tuple((role, _cell(c, f"{where}.{role}", cells)) for role, c in data.items()))


def _column(value, where: str, roles: set) -> Column:
    if isinstance(value, str):
        value = {"value": value}
    data = f.mapping(value, where, allow_none=False)
    f.check_keys(data, ("value", "of", "header", "digits"), where)
    name = f.string(data.get("value"), f"{where}.value", COLUMNS)
    of = data.get("of")
    if of is not None:
        of = f.string(of, f"{where}.of", sorted(roles))
    digits = f.integer(data["digits"], f"{where}.digits", 1) if "digits" in data else None
    header = f.string(data.get("header", COLUMNS[name]), f"{where}.header")
    return Column(name, header, of, digits)


def _table(value, where: str, cells: Sequence[str]) -> Table:
    data = f.mapping(value, where)
    f.check_keys(data, ("title", "rows", "columns"), where)
    raw_rows = data.get("rows", list(cells))
    require(isinstance(raw_rows, list) and raw_rows, f"{where}.rows: expected a non-empty list")
    rows = tuple(_row(r, f"{where}.rows[{i}]", cells) for i, r in enumerate(raw_rows))
    roles = {role for r in rows for role, _ in r.cells if role}
    raw_cols = data.get("columns", list(DEFAULT_COLUMNS))
    require(isinstance(raw_cols, list) and raw_cols, f"{where}.columns: expected a non-empty list")
    columns = tuple(_column(c, f"{where}.columns[{i}]", roles) for i, c in enumerate(raw_cols))
    title = data.get("title")
    return Table(None if title is None else f.string(title, f"{where}.title"), rows, columns)


def _note(value, where: str, cells: Sequence[str]) -> Note:
    if isinstance(value, str):
        return Note(text=value)
    data = f.mapping(value, where, allow_none=False)
    require(len(data) == 1 and next(iter(data)) in ("auto", "sweep"),
            f"{where}: expected text, {{auto: KIND}} or {{sweep: ...}}")
    if "auto" in data:
        return Note(auto=f.string(data["auto"], f"{where}.auto", AUTO_NOTES))
    s = f.mapping(data["sweep"], f"{where}.sweep", allow_none=False)
    f.check_keys(s, ("title", "cells", "key", "label"), f"{where}.sweep")
    return Note(sweep=(f.string(s.get("title"), f"{where}.sweep.title"),
                       _cells(s.get("cells"), f"{where}.sweep.cells", cells),
                       f.string(s.get("key"), f"{where}.sweep.key"),
                       f.string(s.get("label", s.get("key")), f"{where}.sweep.label")))


def _paired(value, cells: Sequence[str]) -> Optional[Paired]:
    if value is None:
        return None
    data = f.mapping(value, "report.paired")
    f.check_keys(data, ("metric", "title", "text", "pairs"), "report.paired")
    metric = f.string(data.get("metric", "fd"), "report.paired.metric", RUN_VALUES)
    pairs = data.get("pairs")
    require(isinstance(pairs, list) and pairs, "report.paired.pairs: expected a list of "
                                               "[cell, baseline] pairs")
    out = []
    for i, p in enumerate(pairs):
        where = f"report.paired.pairs[{i}]"
        require(isinstance(p, list) and len(p) == 2, f"{where}: expected [cell, baseline]")
        out.append((_cell(p[0], f"{where}[0]", cells), _cell(p[1], f"{where}[1]", cells)))
    label = metric.upper() if metric in ("fd", "kid") else metric
    return Paired(metric, f.string(data.get("title", f"Paired differences (final {label}, same "
                                                     f"seeds)"), "report.paired.title"),
                  f.string(data.get("text", f"Δ = {label}(cell) - {label}(baseline) per seed; "
                                            f"95% interval: Student t over the seeds' "
                                            f"differences."), "report.paired.text"), tuple(out))


def _series(value, cells: Sequence[str]) -> Tuple[Series, ...]:
    out = []
    for label, body in f.mapping(value, "report.series").items():
        where = f"report.series.{label}"
        data = f.mapping(body, where, allow_none=False)
        f.check_keys(data, ("cells", "color", "linestyle", "marker"), where)
        style = tuple((k, f.string(str(data[k]), f"{where}.{k}"))
                      for k in ("color", "linestyle", "marker") if k in data)
        out.append(Series(label, _cells(data.get("cells"), f"{where}.cells", cells), style))
    return tuple(out)


def _plot(value, where: str, cells: Sequence[str]) -> Plot:
    data = f.mapping(value, where, allow_none=False)
    f.check_keys(data, ("file", "kind", "x", "y", "title", "xlabel", "ylabel", "ylabels",
                        "panels", "cells"), where)
    file = f.string(data.get("file"), f"{where}.file")
    require(file.endswith(".png") and "/" not in file, f"{where}.file: expected NAME.png")
    kind = f.string(data.get("kind", "curve"), f"{where}.kind", ("curve", "scatter", "pareto"))
    x = f.string(data.get("x", "round" if kind == "curve" else None), f"{where}.x",
                 CURVE_X if kind == "curve" else RUN_VALUES)
    ys = tuple(f.string(y, f"{where}.y", RUN_VALUES)
               for y in f.str_list(data.get("y", "fd"), f"{where}.y"))
    ylabels = f.str_list(data.get("ylabels", data.get("ylabel", list(ys))), f"{where}.ylabels")
    require(len(ylabels) == len(ys), f"{where}.ylabels: one label per y ({len(ys)})")
    common = dict(file=file, kind=kind, x=x, y=ys, ylabels=tuple(ylabels),
                  title=f.string(data.get("title", file[:-4]), f"{where}.title"),
                  xlabel=f.string(data.get("xlabel", x), f"{where}.xlabel"))
    if kind == "scatter":
        return Plot(**common, cells=_cells(data.get("cells", list(cells)), f"{where}.cells", cells))
    require(len(ys) == 1, f"{where}.y: a {kind} plot draws one value")
    panels = f.mapping(data.get("panels", {"": list(cells)}), f"{where}.panels")
    return Plot(**common, panels=tuple((t, _cells(c, f"{where}.panels.{t}", cells))
                                       for t, c in panels.items()))


def _scaling(data: dict) -> Report:
    from feddm_hpc.scaling.network import parse_network

    f.check_keys(data, SCALING_KEYS, "report")
    text = {k: None if data.get(k) is None else f.string(data[k], f"report.{k}")
            for k in ("title", "text")}
    return Report(title=text["title"], text=text["text"], tables=(), notes=(), paired=None,
                  series=(), plots_text=None, link_plots=True, plots=(), kind="scaling",
                  warmup_rounds=f.integer(data.get("warmup_rounds", 0), "report.warmup_rounds", 0),
                  network=parse_network(data.get("network"), "report.network"))


def parse_report(value, cells: Sequence[str]) -> Report:
    data = f.mapping(value, "report")
    if f.string(data.get("kind", "fd"), "report.kind", KINDS) == "scaling":
        return _scaling(data)
    f.check_keys(data, REPORT_KEYS, "report")
    tables = data.get("tables", [{}])
    require(isinstance(tables, list) and tables, "report.tables: expected a non-empty list")
    notes, plots = data.get("notes") or [], data.get("plots") or []
    require(isinstance(notes, list), "report.notes: expected a list")
    require(isinstance(plots, list), "report.plots: expected a list")
    files = [p.get("file") for p in plots if isinstance(p, dict)]
    require(len(set(files)) == len(files), f"report.plots: repeated file names {files}")

    def text(key):
        return None if data.get(key) is None else f.string(data[key], f"report.{key}")
    return Report(
        title=text("title"), text=text("text"),
        tables=tuple(_table(t, f"report.tables[{i}]", cells) for i, t in enumerate(tables)),
        notes=tuple(_note(n, f"report.notes[{i}]", cells) for i, n in enumerate(notes)),
        paired=_paired(data.get("paired"), cells), series=_series(data.get("series"), cells),
        plots_text=text("plots_text"),
        link_plots=f.boolean(data.get("link_plots", True), "report.link_plots"),
        plots=tuple(_plot(p, f"report.plots[{i}]", cells) for i, p in enumerate(plots)))
