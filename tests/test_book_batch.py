"""`tvface book batch`: grid parsing and validation, resumable papermill runs per cell, the SLURM array script.

The end-to-end tests execute tiny notebooks written here (a kernel start costs a few seconds each), never
the project's chapters.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tvface import book
from tvface.book_batch import GridError, cell_id, expand_cells, load_grid, slurm_script
from tvface.cli import main

# Appends its seed to `counter` (one line per execution), then records values for the batch.
TINY = '''# %% tags=["parameters"]
profile = "cpu-demo"
work_dir = ""
seed = 0
overrides = []
counter = ""
{extra}
# %%
from pathlib import Path

from tvface import book

Path(work_dir).mkdir(parents=True, exist_ok=True)
with open(counter, "a") as f:
    f.write(f"{{seed}}\\n")
{body}
book.record(x=seed * 10, seed=seed, n_overrides=len(overrides), nested={{"a": 1.5, "list": [1, 2]}})
'''


def write_notebook(path: Path, extra: str = "", body: str = "") -> Path:
    path.write_text(TINY.format(extra=extra, body=body))
    return path


def write_grid(path: Path, notebooks, grid=None, parameters=None) -> Path:
    data = {"notebooks": [str(n) for n in notebooks], "grid": grid or {}}
    if parameters is not None:
        data["parameters"] = parameters
    path.write_text(yaml.safe_dump(data))
    return path


def executions(counter: Path) -> list[str]:
    return counter.read_text().split() if counter.exists() else []


def result(out: Path, cid: str) -> dict:
    return json.loads((out / "cells" / cid / "result.json").read_text())


# --- grid file and cells (no kernel) -------------------------------------------------------------------


def test_two_by_two_grid_expands_to_four_cells(tmp_path):
    nb = write_notebook(tmp_path / "tiny.py")
    grid = load_grid(write_grid(tmp_path / "g.yaml", [nb], {"profile": ["smoke"], "seed": [0, 1],
                                                            "set": {"model.image_size": [64, 128]}}))
    cells = expand_cells(grid, tmp_path / "out")
    assert [c.id for c in cells] == [
        "tiny--profile=smoke--seed=0--model.image_size=64", "tiny--profile=smoke--seed=0--model.image_size=128",
        "tiny--profile=smoke--seed=1--model.image_size=64", "tiny--profile=smoke--seed=1--model.image_size=128"]
    assert cells[3].overrides == ("train.seed=1", "model.image_size=128")
    p = cells[3].parameters
    assert p["seed"] == 1 and p["profile"] == "smoke" and p["overrides"] == ["train.seed=1", "model.image_size=128"]
    assert p["work_dir"] == str((tmp_path / "out" / "cells" / cells[3].id / "work").resolve())
    assert set(p) == {"profile", "seed", "overrides", "work_dir"}  # only what the notebook declares
    assert len({c.key for c in cells}) == 4


def test_encoder_axis_becomes_model_encoder_override(tmp_path):
    nb = write_notebook(tmp_path / "tiny.py")
    cells = expand_cells(load_grid(write_grid(tmp_path / "g.yaml", [nb], {"profile": "smoke",
                                                                          "encoder": ["resnet", "temporal"]})),
                         tmp_path / "out")
    assert [c.overrides for c in cells] == [("model.encoder=resnet",), ("model.encoder=temporal",)]
    assert [c.id for c in cells] == ["tiny--profile=smoke--encoder=resnet", "tiny--profile=smoke--encoder=temporal"]


def test_cell_id_is_sanitised_with_a_hash_when_needed():
    assert cell_id("nb", {"profile": "smoke", "seed": 3}) == "nb--profile=smoke--seed=3"
    odd = cell_id("nb", {"profile": "configs/my profile.yaml"})
    assert re.fullmatch(r"nb--profile=configs_my_profile\.yaml--[0-9a-f]{8}", odd)
    assert odd != cell_id("nb", {"profile": "configs/my_profile.yaml"})
    long = cell_id("nb", {"synth.root": "x" * 300})
    assert len(long) <= 120 and long == cell_id("nb", {"synth.root": "x" * 300})


@pytest.mark.parametrize("grid, fragment", [
    ({"notebooks": ["NB"], "grids": {}}, "unknown top-level key(s) ['grids']"),
    ({"notebooks": ["NB"], "grid": {"seeds": [0]}}, "unknown grid axis/axes ['seeds']"),
    ({"notebooks": ["NB"], "grid": {"seed": []}}, "grid.seed is empty"),
    ({"notebooks": ["NB"], "grid": {"set": {"model.image_size": [[64]]}}}, "grid.set.model.image_size values must"),
    ({"notebooks": ["NB"], "grid": {"set": {"model.nope": [1]}}}, "grid.set.model.nope"),
    ({"notebooks": ["NB"], "grid": {"set": {"model.image_size": ["big"]}}}, "expected an integer"),
    ({"notebooks": ["NB"], "grid": {"encoder": ["vit"]}}, "grid.encoder = 'vit'"),
    ({"notebooks": ["NB"], "grid": {"profile": ["nope"]}}, "grid.profile 'nope'"),
    ({"notebooks": ["missing.py"]}, "notebook 'missing.py' does not exist"),
])
def test_invalid_grid_is_one_error_naming_file_and_key(tmp_path, grid, fragment):
    nb = write_notebook(tmp_path / "tiny.py")
    grid["notebooks"] = [str(nb) if n == "NB" else n for n in grid["notebooks"]]
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(GridError) as err:
        load_grid(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_unknown_set_key_names_key_through_the_cli(tmp_path, capsys):
    nb = write_notebook(tmp_path / "tiny.py")
    grid = write_grid(tmp_path / "g.yaml", [nb], {"profile": ["smoke"], "set": {"train.nope": [1]}})
    assert main(["book", "batch", "--grid", str(grid), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tvface: error:") and "grid.set.train.nope" in err and "unknown key" in err
    assert not (tmp_path / "out").exists()


def test_axis_a_notebook_cannot_receive_is_an_error_before_anything_runs(tmp_path):
    nb = tmp_path / "plain.py"
    nb.write_text('# %% tags=["parameters"]\nprofile = "cpu-demo"\n\n# %%\nprint(profile)\n')
    for axes, fragment in (({"set": {"model.image_size": [64]}}, "add `overrides = []`"),
                           ({"seed": [0]}, "declares neither `seed` nor `overrides`")):
        grid = load_grid(write_grid(tmp_path / "g.yaml", [nb], {"profile": ["smoke"], **axes}))
        with pytest.raises(GridError, match=re.escape(fragment)) as err:
            expand_cells(grid, tmp_path / "out")
        assert str(nb) in str(err.value)


def test_record_merges_into_the_results_file_and_is_a_no_op_without_it(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.delenv(book.RESULTS_ENV, raising=False)
    assert book.record(x=1) is None
    target = tmp_path / "r.json"
    monkeypatch.setenv(book.RESULTS_ENV, str(target))
    book.record(x=1, arr=np.arange(2))
    book.record(y=np.float32(0.5), x=2)
    assert json.loads(target.read_text()) == {"x": 2, "arr": [0, 1], "y": 0.5}
    with pytest.raises(TypeError, match="not JSON-able"):
        book.record(bad=object())


def test_override_items_parse_values_like_set():
    assert book.override_items(["model.encoder=temporal", "data.n_frames=3", "synth.root=/a/b"]) == {
        "model.encoder": "temporal", "data.n_frames": 3, "synth.root": "/a/b"}


# --- runs (papermill: a kernel per execution) ----------------------------------------------------------


@pytest.mark.notebooks
def test_run_records_results_and_resumes(tmp_path, capsys):
    counter = tmp_path / "count.txt"
    nb = write_notebook(tmp_path / "tiny.py")
    grid = write_grid(tmp_path / "g.yaml", [nb], {"profile": ["smoke"], "seed": [0, 1]},
                      {"counter": str(counter)})
    out = tmp_path / "out"
    argv = ["book", "batch", "--grid", str(grid), "--out", str(out)]
    assert main(argv) == 0
    assert sorted(executions(counter)) == ["0", "1"]
    for seed in (0, 1):
        cid = f"tiny--profile=smoke--seed={seed}"
        assert (out / "cells" / cid / "tiny.ipynb").is_file()
        res = result(out, cid)
        assert res["status"] == "ok" and res["overrides"] == [f"train.seed={seed}"]
        # recorded inside the kernel: TVFACE_BOOK_RESULTS reached it
        assert res["results"] == {"x": seed * 10, "seed": seed, "n_overrides": 1,
                                  "nested": {"a": 1.5, "list": [1, 2]}}
        assert res["parameters"]["seed"] == seed and res["seconds"] > 0 and res["host"]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["status"], r["results"]["x"], r["results"]["nested.a"]) for r in rows] == [("ok", 0, 1.5),
                                                                                         ("ok", 10, 1.5)]
    assert "nested.list" not in rows[0]["results"]
    assert "| tiny--profile=smoke--seed=1 | ok |" in (out / "results.md").read_text()
    before = (out / "cells" / "tiny--profile=smoke--seed=0" / "result.json").stat().st_mtime_ns

    assert main(argv) == 0  # everything done: nothing executes
    assert sorted(executions(counter)) == ["0", "1"]
    assert (out / "cells" / "tiny--profile=smoke--seed=0" / "result.json").stat().st_mtime_ns == before
    assert "skipped" in capsys.readouterr().out


@pytest.mark.notebooks
def test_changed_parameter_reruns_only_the_cell_that_receives_it(tmp_path):
    counter = tmp_path / "count.txt"
    a = write_notebook(tmp_path / "a.py", extra='label = ""\nseed = 1')  # counts "1" per run of a, "0" of b
    b = write_notebook(tmp_path / "b.py")
    out = tmp_path / "out"
    for label, expected in (("x", ["0", "1"]), ("x", ["0", "1"]), ("y", ["0", "1", "1"])):
        grid = write_grid(tmp_path / "g.yaml", [a, b], {"profile": ["smoke"]}, {"counter": str(counter),
                                                                                "label": label})
        assert main(["book", "batch", "--grid", str(grid), "--out", str(out)]) == 0
        assert sorted(executions(counter)) == expected
    assert result(out, "a--profile=smoke")["parameters"]["label"] == "y"


@pytest.mark.notebooks
def test_failing_cell_is_reported_and_the_others_go_on(tmp_path, capsys):
    counter = tmp_path / "count.txt"
    nb = write_notebook(tmp_path / "tiny.py",
                        body='if seed == 0:\n    raise ValueError("boom at seed 0")')
    grid = write_grid(tmp_path / "g.yaml", [nb], {"profile": ["smoke"], "seed": [0, 1]},
                      {"counter": str(counter)})
    out = tmp_path / "out"
    assert main(["book", "batch", "--grid", str(grid), "--out", str(out)]) == 1
    assert sorted(executions(counter)) == ["0", "1"]
    bad, good = result(out, "tiny--profile=smoke--seed=0"), result(out, "tiny--profile=smoke--seed=1")
    assert bad["status"] == "failed" and "boom at seed 0" in bad["error"] and bad["results"] == {}
    assert good["status"] == "ok" and good["results"]["x"] == 10
    assert (out / "cells" / "tiny--profile=smoke--seed=0" / ".tiny.partial.ipynb").is_file()
    assert "boom at seed 0" in (out / "results.md").read_text()
    capsys.readouterr()
    assert main(["book", "batch", "--grid", str(grid), "--out", str(out), "--collect"]) == 1
    assert "failed" in capsys.readouterr().out and sorted(executions(counter)) == ["0", "1"]


@pytest.mark.notebooks
def test_cell_option_runs_only_that_cell(tmp_path, capsys):
    counter = tmp_path / "count.txt"
    nb = write_notebook(tmp_path / "tiny.py")
    grid = write_grid(tmp_path / "g.yaml", [nb], {"profile": ["smoke"], "seed": [0, 1]},
                      {"counter": str(counter)})
    out = tmp_path / "out"
    assert main(["book", "batch", "--grid", str(grid), "--out", str(out), "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["0\ttiny--profile=smoke--seed=0", "1\ttiny--profile=smoke--seed=1"]
    assert main(["book", "batch", "--grid", str(grid), "--out", str(out), "--slurm-only"]) == 0
    assert main(["book", "batch", "--grid", str(grid), "--out", str(out), "--cell", "1"]) == 0
    assert executions(counter) == ["1"]
    assert not (out / "cells" / "tiny--profile=smoke--seed=0").exists()
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["pending", "ok"]
    assert main(["book", "batch", "--grid", str(grid), "--out", str(out), "--cell", "2"]) == 2
    # the grid changed under a submitted array: cell 1 is now another cell
    write_grid(tmp_path / "g.yaml", [nb], {"profile": ["smoke"], "seed": [5, 0]}, {"counter": str(counter)})
    assert main(["book", "batch", "--grid", str(grid), "--out", str(out), "--cell", "1"]) == 2
    assert "--slurm-only" in capsys.readouterr().err and executions(counter) == ["1"]


# --- the SLURM script ----------------------------------------------------------------------------------


def test_slurm_script_runs_one_cell_per_array_task(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TVFACE_SHARED", str(tmp_path / "shared"))
    nb = write_notebook(tmp_path / "tiny.py")
    grid = write_grid(tmp_path / "g.yaml", [nb], {"profile": ["smoke"], "seed": [0, 1]}, {"counter": "c"})
    out = tmp_path / "out"
    assert main(["book", "batch", "--grid", str(grid), "--out", str(out), "--slurm-only", "--slurm-time",
                 "24:00:00", "--slurm-partition", "gpu", "--timeout", "600"]) == 0
    script = out / "slurm_array.sh"
    assert f"sbatch {script}" in capsys.readouterr().out
    assert (out / "logs").is_dir() and not (out / "cells").exists()
    text = script.read_text()
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    sbatch = dict(line.removeprefix("#SBATCH --").split("=", 1) for line in lines if line.startswith("#SBATCH"))
    assert sbatch == {"job-name": "tvface-g", "array": "0-1", "output": f"{out}/logs/%A_%a.out", "gres": "gpu:1",
                      "cpus-per-task": "8", "time": "24:00:00", "mem": "64G", "partition": "gpu"}
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert all(not line.startswith("#SBATCH") for line in lines[first_command:])  # sbatch stops reading there
    assert f"cd {book.REPO_ROOT}" in lines
    assert f"export TVFACE_SHARED={tmp_path / 'shared'}" in lines
    assert any(line.startswith("source ") and line.endswith("/bin/activate") for line in lines)
    assert shlex.split(lines[-1]) == ["tvface", "book", "batch", "--grid", str(grid), "--out", str(out),
                                      "--timeout", "600", "--cell", "$SLURM_ARRAY_TASK_ID"]
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    cells = json.loads((out / "cells.json").read_text())["cells"]
    assert [c["id"] for c in cells] == ["tiny--profile=smoke--seed=0", "tiny--profile=smoke--seed=1"]


def test_slurm_script_without_gpus_has_no_gres(tmp_path):
    from tvface.book_batch import SlurmOptions

    text = slurm_script(tmp_path / "g.yaml", tmp_path / "out", 3, SlurmOptions(gpus=0))
    assert "--gres" not in text and "#SBATCH --array=0-2" in text and "--partition" not in text
