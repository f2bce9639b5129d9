"""``tvface book batch``: run notebooks with papermill over a parameter grid, resumably, or as a SLURM array.

A grid file (YAML) names the notebooks and the axes whose cartesian product makes the runs::

    notebooks: [notebooks/06_deca_baseline.py]     # one or more; relative to the repository, or absolute
    grid:                                          # cartesian product over these axes (each a list)
      profile: [smoke, cpu-demo]                   # -> notebook parameter `profile` (default [cpu-demo])
      seed: [0, 1]                                 # -> parameter `seed` (if declared) and override train.seed
      encoder: [resnet, temporal]                  # -> override model.encoder
      set:                                         # any config keys, each a list of values
        model.image_size: [64, 128]
    parameters: {}                                 # fixed extra notebook parameters (optional)

A *cell* is one notebook x one combination of the axes; the example has 1 x 2 x 2 x 2 x 2 = 16. Each
cell has a stable, readable id (``06_deca_baseline--profile=smoke--seed=0--encoder=resnet--model.image_size=64``;
characters other than ``A-Za-z0-9._=+-`` become ``_`` and such ids, or long ones, end in a short hash)
and its own folder ``OUT/cells/<id>/``:

- ``work/``: the notebook's ``work_dir`` (cells never share one);
- ``<stem>.ipynb``: the executed notebook (a failed run leaves ``.<stem>.partial.ipynb``);
- ``result.json`` (written atomically): id, notebook, parameters, overrides, status (``running``,
  ``ok``, ``failed`` with the error), seconds, start/end time, host, git commit, and ``results``: what
  the notebook recorded with :func:`tvface.book.record` (through ``$TVFACE_BOOK_RESULTS``).

Notebooks receive ``profile``, ``seed`` (when they declare it), ``work_dir``, ``assets_dir`` and
``shared_dir`` (as :func:`tvface.book.default_parameters` gives them), the fixed ``parameters`` and
``overrides``: a list of ``"key=value"`` config overrides (``model.encoder=X``, ``train.seed=S``, then the
``set`` keys). Every value is checked against each profile with :func:`tvface.config.load_config`, and
a notebook that cannot receive an axis (no ``overrides`` parameter) is an error before anything runs.

Reruns are resumable: a cell whose ``result.json`` says ``ok`` for the same definition (a hash of the
notebook's source and the parameters it receives) is skipped; failed, interrupted or changed cells run
again. ``OUT/results.json`` and ``OUT/results.md`` gather one row per cell (id, status, seconds and the
recorded scalars, nested keys joined with ``.``).

Commands::

    tvface book batch --grid grid.yaml --out runs/grid             # every cell (skips finished ones)
    tvface book batch --grid grid.yaml --out runs/grid --list      # cell index + id
    tvface book batch --grid grid.yaml --out runs/grid --dry-run   # what would run, and with what
    tvface book batch --grid grid.yaml --out runs/grid --cell 3    # one cell (what a SLURM task runs)
    tvface book batch --grid grid.yaml --out runs/grid --slurm-only --slurm-time 24:00:00
    sbatch runs/grid/slurm_array.sh                                # one array task per cell
    tvface book batch --grid grid.yaml --out runs/grid --collect   # gather result.json -> results.json/md

A full run and ``--slurm-only`` write ``OUT/cells.json`` (the cell list) and ``OUT/slurm_array.sh``;
``--cell`` refuses to run when the grid no longer matches ``OUT/cells.json`` (the array indices would
point at other cells).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import yaml

from tvface import book, settings
from tvface.config import ConfigError, load_config
from tvface.io.atomic import atomic_write_text

GRID_KEYS = ("notebooks", "grid", "parameters")
AXES = ("profile", "seed", "encoder", "set")
DEFAULT_PROFILE = "cpu-demo"
# Parameters the batch sets itself; a fixed `parameters:` entry may not replace them.
BATCH_PARAMETERS = ("profile", "seed", "overrides", "work_dir")
MAX_ID_CHARS = 120
ID_HASH_CHARS = 8
UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._=+-]")
ENV_EXPORTS = ("TVFACE_ASSETS", "TVFACE_DATA", "TVFACE_SHARED", "TVFACE_ICT_SOURCE")


class GridError(ValueError):
    """A grid file is invalid; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Grid:
    path: Path
    notebooks: tuple[Path, ...]
    axes: tuple[tuple[str, tuple], ...]  # ("profile", values), ("seed", ...), ("encoder", ...), (set key, ...)
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class Cell:
    index: int
    id: str
    notebook: Path
    profile: str
    axes: Mapping[str, Any]  # this cell's value of every axis
    overrides: tuple[str, ...]
    parameters: Mapping[str, Any]  # exactly what the notebook receives (its declared names only)
    key: str  # hash of the notebook source + parameters: a changed cell runs again

    def folder(self, out: Path) -> Path:
        return Path(out) / "cells" / self.id


@dataclass(frozen=True)
class SlurmOptions:
    gpus: int = 1
    cpus: int = 8
    time: str = "08:00:00"
    mem: str = "64G"
    partition: str = ""
    job_name: str = ""


# --- the grid file -----------------------------------------------------------------------------------


def load_grid(path: str | os.PathLike) -> Grid:
    """Read and validate a grid file; every problem is a :class:`GridError` naming the file and key."""
    path = Path(path).resolve()
    if not path.is_file():
        raise GridError(f"grid file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise GridError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise GridError(f"{path}: the top level must be a mapping with keys {list(GRID_KEYS)}")
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise GridError(f"{path}: unknown top-level key(s) {unknown}; valid keys: {list(GRID_KEYS)}")
    notebooks = _notebooks(path, data.get("notebooks"))
    raw_axes = data.get("grid") or {}
    if not isinstance(raw_axes, dict):
        raise GridError(f"{path}: `grid` must be a mapping of axes {list(AXES)}")
    unknown = sorted(set(raw_axes) - set(AXES))
    if unknown:
        raise GridError(f"{path}: unknown grid axis/axes {unknown}; valid axes: {list(AXES)} "
                        f"(config keys go under `set`, fixed notebook parameters under `parameters`)")
    profiles = _axis(path, "grid.profile", raw_axes.get("profile", [DEFAULT_PROFILE]))
    axes: list[tuple[str, tuple]] = [("profile", profiles)]
    if "seed" in raw_axes:
        seeds = _axis(path, "grid.seed", raw_axes["seed"])
        bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)]
        if bad:
            raise GridError(f"{path}: grid.seed must be integers, got {bad}")
        axes.append(("seed", seeds))
    if "encoder" in raw_axes:
        axes.append(("encoder", _axis(path, "grid.encoder", raw_axes["encoder"])))
    sets = raw_axes.get("set") or {}
    if not isinstance(sets, dict):
        raise GridError(f"{path}: grid.set must map config keys to lists of values, e.g. "
                        f"`model.image_size: [64, 128]`")
    for key, values in sets.items():
        key = str(key)
        if key in AXES:
            raise GridError(f"{path}: grid.set.{key} is not a config key; `{key}` is an axis of `grid` "
                            f"(config keys are dotted, e.g. model.image_size)")
        if key in ("model.encoder", "train.seed") and key.split(".")[1] in raw_axes:
            raise GridError(f"{path}: grid.set.{key} repeats the `{key.split('.')[1]}` axis; give it once")
        axes.append((key, _axis(path, f"grid.set.{key}", values)))
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise GridError(f"{path}: `parameters` must be a mapping of notebook parameters")
    taken = sorted(set(parameters) & set(BATCH_PARAMETERS))
    if taken:
        raise GridError(f"{path}: parameters {taken} are set by the batch (use the grid axes; "
                        f"work_dir is OUT/cells/<id>/work)")
    grid = Grid(path, notebooks, tuple(axes), dict(parameters))
    _check_config_values(grid)
    return grid


def _notebooks(path: Path, value: Any) -> tuple[Path, ...]:
    if isinstance(value, str):
        value = [value]
    if not value or not isinstance(value, list):
        raise GridError(f"{path}: `notebooks` must list one or more notebooks, e.g. "
                        f"[notebooks/06_deca_baseline.py]")
    found = []
    for item in value:
        nb = Path(str(item)).expanduser()
        nb = nb if nb.is_absolute() else book.REPO_ROOT / nb
        if not nb.is_file():
            raise GridError(f"{path}: notebook {item!r} does not exist (looked for {nb}; relative paths are "
                            f"relative to the repository {book.REPO_ROOT})")
        nb = nb.resolve()
        if nb in found:
            raise GridError(f"{path}: notebook {item!r} is listed twice")
        found.append(nb)
    stems = [nb.stem for nb in found]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:
        raise GridError(f"{path}: notebooks {twins} share a file name; cell ids start with it, rename one")
    return tuple(found)


def _axis(path: Path, name: str, values: Any) -> tuple:
    if not isinstance(values, list):
        values = [values]
    if not values:
        raise GridError(f"{path}: {name} is empty; give it at least one value or remove it")
    bad = [v for v in values if isinstance(v, (dict, list))]
    if bad:
        raise GridError(f"{path}: {name} values must be scalars (numbers, strings, true/false), got {bad}")
    labels = [str(v) for v in values]
    twins = sorted({s for s in labels if labels.count(s) > 1})
    if twins:
        raise GridError(f"{path}: {name} lists {twins} more than once")
    return tuple(values)


def format_override(key: str, value: Any) -> str:
    """``key=value`` that :func:`tvface.config.parse_overrides` reads back as ``value``."""
    if isinstance(value, str):
        return f"{key}={value}" if yaml.safe_load(value) == value else f"{key}={json.dumps(value)}"
    return f"{key}={json.dumps(value)}"


def _cell_overrides(axes: Mapping[str, Any]) -> list[str]:
    out = []
    if "encoder" in axes:
        out.append(format_override("model.encoder", axes["encoder"]))
    if "seed" in axes:
        out.append(format_override("train.seed", axes["seed"]))
    out += [format_override(k, v) for k, v in axes.items() if k not in ("profile", "seed", "encoder")]
    return out


def _check_config_values(grid: Grid) -> None:
    """Each axis value alone (the error names the key), then each combination, against each profile."""
    profiles = dict(grid.axes)["profile"]
    for profile in profiles:
        try:
            load_config(str(profile))
        except ConfigError as exc:
            raise GridError(f"{grid.path}: grid.profile {profile!r}: {exc}") from None
        for name, values in grid.axes[1:]:
            for value in values:
                override = _cell_overrides({name: value})
                try:
                    load_config(str(profile), override)
                except ConfigError as exc:
                    where = f"grid.set.{name}" if name not in AXES else f"grid.{name}"
                    raise GridError(f"{grid.path}: {where} = {value!r} (profile {profile}): {exc}") from None
    for combo in _combinations(grid):
        try:
            load_config(str(combo["profile"]), _cell_overrides(combo))
        except ConfigError as exc:
            raise GridError(f"{grid.path}: the combination {combo} is not a valid config: {exc}") from None


def _combinations(grid: Grid) -> Iterator[dict[str, Any]]:
    names = [name for name, _ in grid.axes]
    for values in itertools.product(*(v for _, v in grid.axes)):
        yield dict(zip(names, values))


# --- cells -------------------------------------------------------------------------------------------


def cell_id(stem: str, axes: Mapping[str, Any]) -> str:
    """``<stem>--name=value--...``: filesystem-safe; a hash suffix when characters were replaced or it is long."""
    raw = "--".join([stem, *(f"{k}={v}" for k, v in axes.items())])
    safe = UNSAFE_ID_CHARS.sub("_", raw)
    if safe == raw and len(raw) <= MAX_ID_CHARS:
        return raw
    digest = hashlib.sha1(raw.encode()).hexdigest()[:ID_HASH_CHARS]
    return f"{safe[:MAX_ID_CHARS - ID_HASH_CHARS - 2]}--{digest}"


def expand_cells(grid: Grid, out: str | os.PathLike) -> list[Cell]:
    """Every (notebook, combination) in a fixed order: notebooks as listed, then the axes' product."""
    import jupytext

    out = Path(out).resolve()
    axis_names = [name for name, _ in grid.axes]
    cells: list[Cell] = []
    declared_anywhere: set[str] = set()
    for nb_path in grid.notebooks:
        declared = book._parameter_names(jupytext.read(nb_path), nb_path)
        declared_anywhere |= declared
        _check_receivable(grid, nb_path, declared, axis_names)
        source_hash = hashlib.sha256(nb_path.read_bytes()).hexdigest()
        for combo in _combinations(grid):
            profile = str(combo["profile"])
            cid = cell_id(nb_path.stem, combo)
            overrides = tuple(_cell_overrides(combo))
            params = {k: v for k, v in book.default_parameters(profile).items() if k != "work_dir"}
            params.update(grid.parameters)
            params.update(profile=profile, work_dir=str(out / "cells" / cid / "work"), overrides=list(overrides))
            if "seed" in combo:
                params["seed"] = combo["seed"]
            params = {k: v for k, v in params.items() if k in declared}
            key = hashlib.sha256(json.dumps([source_hash, params], sort_keys=True, default=str).encode()).hexdigest()
            cells.append(Cell(len(cells), cid, nb_path, profile, combo, overrides, params, key[:16]))
    unknown = sorted(set(grid.parameters) - declared_anywhere)
    if unknown:
        raise GridError(f"{grid.path}: parameters {unknown} are declared by none of the notebooks "
                        f"(add them to a parameters cell, or remove them)")
    ids = [c.id for c in cells]
    twins = sorted({i for i in ids if ids.count(i) > 1})
    if twins:
        raise GridError(f"{grid.path}: cells share the id(s) {twins}; make the axis values distinct")
    return cells


def _check_receivable(grid: Grid, nb_path: Path, declared: set[str], axis_names: list[str]) -> None:
    if "profile" not in declared:
        raise GridError(f"{grid.path}: {nb_path} has no `profile` parameter; add `profile = \"cpu-demo\"` to "
                        f"its parameters cell")
    if "overrides" in declared:
        return
    needs = [n for n in axis_names if n not in ("profile", "seed")]
    if needs:
        raise GridError(f"{grid.path}: {nb_path} cannot receive the grid key(s) {needs}: it has no `overrides` "
                        f"parameter; add `overrides = []` to its parameters cell and pass it to load_config")
    if "seed" in axis_names and "seed" not in declared:
        raise GridError(f"{grid.path}: {nb_path} cannot receive the `seed` axis: it declares neither `seed` nor "
                        f"`overrides`; add `seed = 0` (or `overrides = []`) to its parameters cell")


def cells_for(grid_path: str | os.PathLike, out: str | os.PathLike) -> tuple[Grid, list[Cell]]:
    grid = load_grid(grid_path)
    return grid, expand_cells(grid, out)


# --- running -----------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cell_state(cell: Cell, out: Path) -> tuple[str, str]:
    """(``skip``|``run``, why): ``skip`` when ``result.json`` is ``ok`` for this very definition."""
    previous = _read_json(cell.folder(out) / "result.json")
    if previous is None:
        return "run", "new"
    if previous.get("key") != cell.key:
        return "run", "changed"
    if previous.get("status") == "ok":
        return "skip", "done"
    return "run", str(previous.get("status", "unknown"))


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the block (papermill's kernel inherits this process's environment)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_commit(root: Path = book.REPO_ROOT) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def run_cell(cell: Cell, out: Path, timeout: int = 1800, commit: str | None = None) -> dict:
    """Execute one cell's notebook in its folder; write ``result.json`` (atomic) before and after."""
    folder = cell.folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    recorded = folder / "recorded.json"
    recorded.unlink(missing_ok=True)
    result = {"id": cell.id, "index": cell.index, "notebook": str(cell.notebook), "key": cell.key,
              "axes": dict(cell.axes), "parameters": dict(cell.parameters), "overrides": list(cell.overrides),
              "status": "running", "error": None, "seconds": None, "start": _now(), "end": None,
              "host": socket.gethostname(), "git_commit": commit,
              "slurm": {k: os.environ[k] for k in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID")
                        if k in os.environ},
              "results": {}}
    _write_json(folder / "result.json", result)
    start = time.perf_counter()
    try:
        with _env(book.RESULTS_ENV, str(recorded)):
            run = book.execute_notebook(cell.notebook, folder, cell.profile, cell.parameters, timeout=timeout)
        result.update(status="ok", output=str(run.output))
    except Exception as exc:  # a failed cell is reported and the batch goes on
        result.update(status="failed", error=str(exc) or type(exc).__name__)
    result.update(seconds=round(time.perf_counter() - start, 2), end=_now(),
                  results=_read_json(recorded) or {})
    _write_json(folder / "result.json", result)
    return result


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def run_cells(cells: Sequence[Cell], out: Path, timeout: int = 1800,
              log: Callable[[str], None] = print) -> list[dict]:
    """Run the cells that are not done (in order); returns their results (skipped ones as found)."""
    commit = git_commit()
    results = []
    for cell in cells:
        action, why = cell_state(cell, out)
        prefix = f"[{cell.index}] {cell.id}"
        if action == "skip":
            log(f"{prefix}: skipped (ok for this definition)")
            results.append(_read_json(cell.folder(out) / "result.json") or {})
            continue
        log(f"{prefix}: running ({why})")
        result = run_cell(cell, out, timeout, commit)
        detail = f"ok ({result['seconds']:.1f} s)" if result["status"] == "ok" else f"FAILED: {result['error']}"
        log(f"{prefix}: {detail}")
        results.append(result)
    return results


# --- the summary -------------------------------------------------------------------------------------


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``a.b`` keys; only scalars are kept (lists stay in each cell's result.json)."""
    flat: dict[str, Any] = {}
    for k, v in values.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten(v, f"{name}."))
        elif v is None or isinstance(v, (str, int, float, bool)):
            flat[name] = v
    return flat


def collect(cells: Sequence[Cell], out: Path) -> list[dict]:
    """One row per cell from its ``result.json`` (``pending`` without one; ``stale`` when the cell changed)."""
    rows = []
    for cell in cells:
        found = _read_json(cell.folder(out) / "result.json")
        row = {"index": cell.index, "id": cell.id, "notebook": cell.notebook.stem, "status": "pending",
               "stale": False, "seconds": None, "error": None, "results": {}}
        if found is not None:
            row.update(status=found.get("status", "unknown"), stale=found.get("key") != cell.key,
                       seconds=found.get("seconds"), error=found.get("error"),
                       results=flatten(found.get("results") or {}))
        rows.append(row)
    return rows


def write_summary(rows: Sequence[dict], out: Path, grid_path: Path) -> tuple[Path, Path]:
    """``results.json`` (the rows) and ``results.md`` (one table per notebook), both atomic."""
    counts = {s: sum(r["status"] == s for r in rows) for s in dict.fromkeys(r["status"] for r in rows)}
    _write_json(out / "results.json", {"grid": str(grid_path), "written": _now(), "counts": counts,
                                       "rows": list(rows)})
    lines = [f"# Grid results: {grid_path.name}", "",
             f"{len(rows)} cells: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".", ""]
    for stem in dict.fromkeys(r["notebook"] for r in rows):
        group = [r for r in rows if r["notebook"] == stem]
        # a column only for values some cell has (e.g. not for a condition the set lacks)
        keys = list(dict.fromkeys(k for r in group for k, v in r["results"].items() if v is not None))
        header = ["cell", "id", "status", "seconds", *keys]
        lines += [f"## {stem}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for r in group:
            status = r["status"] + (" (stale)" if r["stale"] else "")
            vals = [r["index"], r["id"], status, r["seconds"], *(r["results"].get(k) for k in keys)]
            lines.append("| " + " | ".join(_md_value(v) for v in vals) + " |")
        failed = [r for r in group if r["status"] == "failed"]
        if failed:
            lines += [""] + [f"- cell {r['index']} failed: {_one_line(r['error'])}" for r in failed]
        lines.append("")
    atomic_write_text(out / "results.md", "\n".join(lines))
    return out / "results.json", out / "results.md"


def _md_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def _one_line(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# --- the cell list and the SLURM array ---------------------------------------------------------------


def write_cell_list(cells: Sequence[Cell], out: Path, grid_path: Path) -> Path:
    path = out / "cells.json"
    _write_json(path, {"grid": str(grid_path), "n_cells": len(cells),
                       "cells": [{"index": c.index, "id": c.id, "notebook": str(c.notebook), "key": c.key,
                                  "overrides": list(c.overrides), "parameters": dict(c.parameters)}
                                 for c in cells]})
    return path


def check_cell_list(cells: Sequence[Cell], index: int, out: Path) -> None:
    """With ``--cell``: the grid must still give the cell list the SLURM script was written for."""
    listed = _read_json(out / "cells.json")
    if listed is None:
        return
    entries = listed.get("cells") or []
    if len(entries) != len(cells) or entries[index].get("id") != cells[index].id:
        was = entries[index].get("id") if index < len(entries) else "absent"
        raise GridError(f"the grid no longer gives the cells of {out / 'cells.json'} (cell {index} was {was}, "
                        f"is now {cells[index].id}; {len(entries)} cells then, {len(cells)} now): rewrite it "
                        f"with --slurm-only and resubmit, or restore the grid")


def slurm_script(grid_path: Path, out: Path, n_cells: int, options: SlurmOptions = SlurmOptions(),
                 timeout: int = 1800) -> str:
    """An sbatch array script: task ``i`` runs ``tvface book batch ... --cell i``."""
    if n_cells < 1:
        raise ValueError("a SLURM array needs at least one cell")
    job = options.job_name or f"tvface-{grid_path.stem}"
    sbatch = [f"--job-name={job}", f"--array=0-{n_cells - 1}", f"--output={out / 'logs' / '%A_%a.out'}"]
    if options.gpus > 0:
        sbatch.append(f"--gres=gpu:{options.gpus}")
    sbatch += [f"--cpus-per-task={options.cpus}", f"--time={options.time}", f"--mem={options.mem}"]
    if options.partition:
        sbatch.append(f"--partition={options.partition}")
    prefix = Path(sys.prefix)
    activate = prefix / "bin" / "activate"
    env_line = (f"source {shlex.quote(str(activate))}" if activate.is_file()
                else f"export PATH={shlex.quote(str(prefix / 'bin'))}:\"$PATH\"")
    exports = {"TVFACE_ASSETS": str(settings.assets_dir()), "TVFACE_DATA": str(settings.data_dir())}
    exports.update({k: os.environ[k] for k in ENV_EXPORTS if os.environ.get(k)})
    command = ["tvface", "book", "batch", "--grid", str(grid_path), "--out", str(out), "--timeout", str(timeout)]
    lines = ["#!/bin/bash",
             f"# Written by `tvface book batch` on {_now()}: one array task per grid cell ({n_cells}; "
             f"see {out / 'cells.json'}).",
             f"# Submit: sbatch {out / 'slurm_array.sh'}",
             f"# Then:   tvface book batch --grid {grid_path} --out {out} --collect",
             *(f"#SBATCH {s}" for s in sbatch),
             "set -euo pipefail",
             f"cd {shlex.quote(str(book.REPO_ROOT))}",
             env_line,
             *(f"export {k}={shlex.quote(v)}" for k, v in exports.items()),
             " ".join(shlex.quote(c) for c in command) + ' --cell "$SLURM_ARRAY_TASK_ID"',
             ""]
    return "\n".join(lines)


def write_slurm_script(grid_path: Path, out: Path, n_cells: int, options: SlurmOptions = SlurmOptions(),
                       timeout: int = 1800) -> Path:
    (out / "logs").mkdir(parents=True, exist_ok=True)  # SLURM does not create the --output folder
    path = out / "slurm_array.sh"
    atomic_write_text(path, slurm_script(grid_path, out, n_cells, options, timeout))
    path.chmod(0o755)
    return path


# --- the command -------------------------------------------------------------------------------------


def run_batch_command(args) -> int:
    """``tvface book batch`` (see the module docstring); returns 1 when a cell failed."""
    out = Path(args.out).resolve()
    grid, cells = cells_for(args.grid, out)
    if args.cell is not None and not 0 <= args.cell < len(cells):
        raise GridError(f"--cell {args.cell}: the grid {grid.path} has cells 0..{len(cells) - 1} (see --list)")
    if args.list:
        for c in cells:
            print(f"{c.index}\t{c.id}")
        return 0
    selected = cells if args.cell is None else [cells[args.cell]]
    if args.dry_run:
        for c in selected:
            action, why = cell_state(c, out)
            print(f"[{c.index}] {c.id}: {'skip' if action == 'skip' else 'run'} ({why})\n"
                  f"    {c.notebook}\n    overrides {list(c.overrides)}\n    parameters {dict(c.parameters)}")
        print(f"{len(cells)} cells; nothing was run or written (dry run)")
        return 0
    if args.collect:
        rows = collect(cells, out)
        paths = write_summary(rows, out, grid.path)
        print(paths[1].read_text(), end="")
        print(f"wrote {paths[0]} and {paths[1]}")
        return 1 if any(r["status"] == "failed" for r in rows) else 0
    options = SlurmOptions(gpus=args.slurm_gpus, cpus=args.slurm_cpus, time=args.slurm_time, mem=args.slurm_mem,
                           partition=args.slurm_partition, job_name=args.slurm_job_name)
    if args.cell is None:  # an array task must not rewrite the script it was submitted with
        write_cell_list(cells, out, grid.path)
        script = write_slurm_script(grid.path, out, len(cells), options, args.timeout)
    else:
        check_cell_list(cells, args.cell, out)
        script = out / "slurm_array.sh"
    if args.slurm_only:
        print(f"{len(cells)} cells listed in {out / 'cells.json'}")
        print(f"submit with:\n  sbatch {script}")
        return 0
    results = run_cells(selected, out, args.timeout)
    paths = write_summary(collect(cells, out), out, grid.path)
    n_failed = sum(r.get("status") != "ok" for r in results)
    print(f"{len(results) - n_failed}/{len(results)} cells ok; summary {paths[1]}")
    if args.cell is None:
        print(f"to run the grid as a SLURM array instead:\n  sbatch {script}")
    return 1 if n_failed else 0


def add_batch_parser(book_subparsers) -> None:
    p = book_subparsers.add_parser("batch", help="run notebooks over a parameter grid (resumable; SLURM array)",
                                   description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", required=True, help="grid YAML (see `tvface.book_batch`)")
    p.add_argument("--out", required=True, help="output folder: cells/<id>/, results.json/md, slurm_array.sh")
    p.add_argument("--cell", type=int, default=None, metavar="I", help="run only cell I (a SLURM array task)")
    p.add_argument("--timeout", type=int, default=1800, metavar="S", help="seconds per notebook cell execution")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="print cell index and id, then exit")
    mode.add_argument("--dry-run", action="store_true", help="print what would run; write nothing")
    mode.add_argument("--collect", action="store_true", help="only gather result.json files into results.json/md")
    mode.add_argument("--slurm-only", action="store_true", help="write slurm_array.sh and cells.json; run nothing")
    p.add_argument("--slurm-gpus", type=int, default=SlurmOptions.gpus, help="GPUs per task (0: no --gres)")
    p.add_argument("--slurm-cpus", type=int, default=SlurmOptions.cpus, help="--cpus-per-task")
    p.add_argument("--slurm-time", default=SlurmOptions.time, help="--time per task, e.g. 08:00:00")
    p.add_argument("--slurm-mem", default=SlurmOptions.mem, help="--mem per task, e.g. 64G")
    p.add_argument("--slurm-partition", default="", help="--partition (omitted when empty)")
    p.add_argument("--slurm-job-name", default="", help="--job-name (default tvface-<grid file stem>)")
    p.set_defaults(func=run_batch_command)

