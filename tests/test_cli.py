import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "crossdistill.cli", *args], capture_output=True, text=True, timeout=120)


def test_config_show_resolves_overrides():
    p = run("config", "show", "demo", "train.lr=3e-4", "limit=2")
    assert p.returncode == 0, p.stderr
    assert "lr: 0.0003" in p.stdout and "limit: 2" in p.stdout


def test_unknown_key_exit_2_with_suggestion():
    p = run("config", "show", "demo", "trian.lr=1")
    assert p.returncode == 2
    assert "did you mean 'train'" in p.stderr
    assert "Traceback" not in p.stderr


def test_missing_recipe_exit_2(tmp_path):
    p = run("run", str(tmp_path / "nope.yaml"), "--dry-run")
    assert p.returncode == 2 and "recipe file not found" in p.stderr


def test_models_list():
    p = run("models", "list")
    assert p.returncode == 0 and "smollm2-135m-instruct" in p.stdout


def test_pool_of_one_run_is_a_located_error(tmp_path):
    p = run("pool", str(tmp_path), "--out", str(tmp_path / "p.json"))
    assert p.returncode == 2 and "at least two runs" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "p.json").exists()
