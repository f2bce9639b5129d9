"""Execute the paired notebooks with papermill and build the Jupyter Book.

Notebooks are jupytext percent ``.py`` files under ``notebooks/`` with one ``parameters`` cell;
executed ``.ipynb`` files are build outputs under ``book/generated/`` (ignored by git). The book's
``_config.yml`` / ``_toc.yml`` sit at the repository root and build with ``execute_notebooks: off``.

A notebook calls :func:`record` to hand named results to ``tvface book batch`` (see
:mod:`tvface.book_batch`); outside a batch run the call does nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tvface import settings

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BOOK_FILES = ("_config.yml", "_toc.yml")
# The JSON file :func:`record` merges into; ``tvface book batch`` sets it for each notebook's kernel.
RESULTS_ENV = "TVFACE_BOOK_RESULTS"


class NotebookError(RuntimeError):
    """A notebook failed while executing; the message names it and the failing cell's error."""


@dataclass(frozen=True)
class NotebookRun:
    source: Path
    output: Path
    seconds: float


def notebook_sources(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9]*.py"))


def default_parameters(profile: str) -> dict[str, str]:
    """Parameters every notebook accepts: the profile and the folders it reads and writes."""
    shared = settings.shared_dir()
    return {
        "profile": profile,
        "assets_dir": str(settings.assets_dir()),
        "shared_dir": str(shared) if shared else "",
        "work_dir": str(settings.data_dir() / "notebooks" / profile),
    }


def execute_notebook(source: Path, out_dir: Path, profile: str,
                     parameters: Mapping[str, object] | None = None, timeout: int = 1800) -> NotebookRun:
    """Convert a percent ``.py`` notebook to ``.ipynb``, run it with papermill, write it atomically."""
    import jupytext
    import nbformat
    import papermill as pm

    source = Path(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = {**default_parameters(profile), **(parameters or {})}
    known = _parameter_names(nb, source)
    params = {k: v for k, v in params.items() if k in known}
    staged = out_dir / f".{source.stem}.in.ipynb"
    partial = out_dir / f".{source.stem}.partial.ipynb"
    nbformat.write(nb, staged)
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(staged), str(partial), parameters=params, kernel_name="python3",
                            cwd=str(out_dir), progress_bar=False, execution_timeout=timeout,
                            log_output=False)
    except pm.PapermillExecutionError as exc:
        raise NotebookError(
            f"notebook {source} failed in cell {exc.exec_count} ({exc.ename}: {exc.evalue}); "
            f"the partly executed copy is {partial}") from None
    except Exception as exc:  # a dead kernel, a timeout: still name the notebook
        raise NotebookError(f"notebook {source} did not finish ({type(exc).__name__}: {exc}); "
                            f"the partly executed copy, if any, is {partial}") from None
    finally:
        staged.unlink(missing_ok=True)
    output = out_dir / f"{source.stem}.ipynb"
    os.replace(partial, output)
    return NotebookRun(source, output, time.perf_counter() - start)


def _parameter_names(nb, source: Path | str = "notebook") -> set[str]:
    import ast

    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse(cell.source)
            return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)}
    raise NotebookError(f"{source} has no cell tagged 'parameters' (add `# %% tags=[\"parameters\"]`)")


def record(**values: Any) -> None:
    """Record named, JSON-able results of this notebook run, e.g. ``book.record(nme=1.9, seed=seed)``.

    Merges ``values`` into the JSON file named by ``$TVFACE_BOOK_RESULTS`` (``tvface book batch`` sets
    it per grid cell and copies the values into the cell's ``result.json``); a no-op when it is unset.
    NumPy and torch scalars/arrays are stored as numbers/lists. Returns None, so the call shows no output.
    """
    target = os.environ.get(RESULTS_ENV)
    if not target:
        return None
    from tvface.io.atomic import atomic_write_text

    def builtin(obj: Any) -> Any:
        if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
            return obj.tolist()
        raise TypeError(f"book.record: a {type(obj).__name__} is not JSON-able; record numbers, strings, "
                        f"lists or dicts of them")

    path = Path(target)
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(json.loads(json.dumps(values, default=builtin)))
    atomic_write_text(path, json.dumps(merged, indent=1) + "\n")
    return None


def override_items(overrides: Sequence[str]) -> dict[str, Any]:
    """``["model.encoder=temporal", "train.lr=1e-4"]`` -> ``{"model.encoder": "temporal", "train.lr": 1e-4}``:
    the ``overrides`` notebook parameter as a dotted-key mapping (values read as YAML, like ``--set``),
    for notebooks that build their config overrides as a dict."""
    import yaml

    from tvface.config import ConfigError

    items = {}
    for item in overrides:
        if "=" not in str(item):
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = str(item).split("=", 1)
        items[key.strip()] = yaml.safe_load(raw)
    return items


def stage_book(dest: Path, generated: Path) -> Path:
    """Copy the book sources (config, toc, ``book/*.md``) and executed notebooks into ``dest``."""
    dest = Path(dest)
    (dest / "book" / "generated").mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        shutil.copy2(REPO_ROOT / name, dest / name)
    for md in (REPO_ROOT / "book").glob("*.md"):
        shutil.copy2(md, dest / "book" / md.name)
    for nb in Path(generated).glob("*.ipynb"):
        if Path(generated).resolve() != (dest / "book" / "generated").resolve():
            shutil.copy2(nb, dest / "book" / "generated" / nb.name)
    return dest


def build_book(root: Path = REPO_ROOT, warnings_as_errors: bool = True) -> Path:
    """``jupyter-book build`` (1.x) with ``-W``; returns the HTML folder."""
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(root), "--path-output", str(root / "book")]
    if warnings_as_errors:
        cmd += ["-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"jupyter-book build of {root} failed (exit {proc.returncode}):\n{tail}")
    return root / "book" / "_build" / "html"


def missing_from_toc(sources: Sequence[Path] | None = None, toc: Path = REPO_ROOT / "_toc.yml") -> list[str]:
    """Notebook stems that ``_toc.yml`` does not list (every notebook must be in the book)."""
    import re

    listed = set(re.findall(r"file:\s*book/generated/([\w.-]+)", toc.read_text()))
    return [p.stem for p in (sources or notebook_sources()) if p.stem not in listed]
