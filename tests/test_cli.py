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


def test_only_that_selects_no_step_exit_2(tmp_path):
    p = run("run", "demo", f"output_dir={tmp_path / 'out'}", "--only", "trian/sft", "--dry-run")
    assert p.returncode == 2 and "field '--only'" in p.stderr and "'trian/sft' selects no step" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "out").exists()


def test_models_list():
    p = run("models", "list")
    assert p.returncode == 0 and "smollm2-135m-instruct" in p.stdout


def test_pool_of_one_run_is_a_located_error(tmp_path):
    p = run("pool", str(tmp_path), "--out", str(tmp_path / "p.json"))
    assert p.returncode == 2 and "at least two runs" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "p.json").exists()


def test_every_argument_has_help():
    import argparse

    from crossdistill.cli import build_parser

    def check(parser, where):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    assert a._choices_actions and all(c.help for c in a._choices_actions), where
                    check(sp, f"{where} {name}")
            elif not isinstance(a, argparse._HelpAction):
                assert a.help and a.help != argparse.SUPPRESS, f"{where}: {a.dest} has no help text"

    check(build_parser(), "crossdistill")


def test_version():
    from crossdistill import __version__

    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"crossdistill {__version__}"


def test_tasks_list_names_every_builtin_task():
    from crossdistill.evaluation.tasks import BUILTIN_TASKS

    p = run("tasks", "list")
    assert p.returncode == 0, p.stderr
    listed = [line.split()[0] for line in p.stdout.splitlines() if line and not line.startswith("(")]
    assert listed == list(BUILTIN_TASKS)


def test_override_in_the_recipe_place_applies_to_the_demo():
    p = run("config", "show", "limit=2", "train.lr=3e-4")
    assert p.returncode == 0, p.stderr
    assert "limit: 2" in p.stdout and "lr: 0.0003" in p.stdout
    p = run("run", "limit=2", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "recipe file not found" not in p.stderr
