import subprocess
import sys

import yaml

from tvface.cli import main


def test_assets_table(tmp_path, capsys):
    (tmp_path / "deca_model.tar").write_bytes(b"x")
    assert main(["assets", "--assets-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "deca_model.tar" in out and "found" in out and "missing" in out
    assert str(tmp_path / "generic_model.pkl") in out


def test_config_show_applies_overrides(capsys):
    assert main(["config", "show", "--profile", "smoke", "--set", "render.image_size=48"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["name"] == "smoke" and cfg["render"]["image_size"] == 48


def test_bad_override_is_one_clear_error(capsys):
    assert main(["config", "show", "--set", "render.nope=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tvface: error:") and "render: unknown key" in err and "nope" in err and "Traceback" not in err


def test_console_script_entry_point():
    proc = subprocess.run([sys.executable, "-m", "tvface.cli", "-h"], capture_output=True, text=True)
    assert proc.returncode == 0 and "assets" in proc.stdout and "book" in proc.stdout
