"""scripts/stash.py: a run's step cache carried to a new folder, without checkpoints and finished methods' weights."""
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scripts_loader import load_script  # noqa: E402
from test_runner_report import fake_stages, make_cfg  # noqa: E402,F401  (the fixture, used by name)

from crossdistill import runner  # noqa: E402
from crossdistill.io import sha256_file  # noqa: E402


def load():
    return load_script("stash")


def test_save_then_restore_continues_the_run_elsewhere(tmp_path, fake_stages):  # noqa: F811
    stash = load()
    cfg = make_cfg(tmp_path)
    runner.run(cfg)
    run = Path(cfg.output_dir)
    (run / "train" / "sft" / "checkpoints" / "checkpoint-25").mkdir(parents=True)
    (run / "train" / "sft" / "checkpoints" / "checkpoint-25" / "optimizer.pt").write_bytes(b"x" * 1000)
    (run / "eval" / "cdsdft" / ".done").unlink()   # cdsdft in flight: its eval begun, not finished
    assert stash.main(["save", str(run), str(tmp_path / "stash")]) == 0
    manifest = json.loads((tmp_path / "stash" / "stash.json").read_text())
    assert set(manifest) == {"data", "distill", "eval/seed", "train/sft", "eval/sft", "train/cdsdft", "eval/cdsdft"}
    weights = run / "train" / "sft" / "adapter" / "adapter_model.safetensors"
    assert manifest["train/sft"]["left_out"] == {"adapter/adapter_model.safetensors": sha256_file(weights)}
    assert manifest["train/cdsdft"]["left_out"] == {} and manifest["eval/cdsdft"]["status"] == "resume"
    kept = tmp_path / "stash" / "train"
    assert (kept / "cdsdft" / "adapter" / "adapter_model.safetensors").exists()   # its eval still reads it
    assert not (kept / "sft" / "checkpoints").exists()
    # only the weights stay behind: the rest of the adapter folder, its .complete marker included, is carried
    assert not (kept / "sft" / "adapter" / "adapter_model.safetensors").exists()
    assert (kept / "sft" / "adapter" / ".complete").exists()
    assert (kept / "sft" / "log.jsonl").exists() and (kept / "sft" / ".done").exists()

    # a new machine: a fresh folder, the stash restored, the same recipe run there
    run2 = tmp_path / "elsewhere"
    assert stash.main(["restore", str(tmp_path / "stash"), str(run2)]) == 0
    fake_stages.clear()
    cfg2 = make_cfg(tmp_path, f"output_dir={run2}")
    summary = runner.run(cfg2)
    assert fake_stages == ["eval/cdsdft"]   # only what was not done; sft's missing weights are read by no one
    assert summary["train/sft"] == {"status": "cached"}
    # a second restore finds every step done under the same key and leaves the run alone
    assert stash.restore(tmp_path / "stash", run2) == []
    # the restored run still knows sft's adapter digest: publish writes it although the weights stayed behind
    load_script("publish").publish(run2, tmp_path / "published")
    adapters = json.loads((tmp_path / "published" / "adapters.json").read_text())
    assert adapters["sft"] == {"sha256": sha256_file(weights), "bytes": weights.stat().st_size}
    assert adapters["cdsdft"]["sha256"] == sha256_file(kept / "cdsdft" / "adapter" / "adapter_model.safetensors")
    # and a save of the restored run carries the digest on (the weights are not there to hash again)
    assert stash.main(["save", str(run2), str(tmp_path / "stash2")]) == 0
    again = json.loads((tmp_path / "stash2" / "stash.json").read_text())
    assert again["train/sft"]["left_out"] == manifest["train/sft"]["left_out"]


def test_no_weights_leaves_out_the_in_flight_adapter_too_and_restore_retrains_it(tmp_path, fake_stages):  # noqa: F811
    stash = load()
    cfg = make_cfg(tmp_path)
    runner.run(cfg)
    run = Path(cfg.output_dir)
    (run / "eval" / "cdsdft" / ".done").unlink()   # cdsdft in flight
    assert stash.main(["save", "--no-weights", str(run), str(tmp_path / "stash")]) == 0
    manifest = json.loads((tmp_path / "stash" / "stash.json").read_text())
    assert list(manifest["train/cdsdft"]["left_out"]) == ["adapter/adapter_model.safetensors"]
    assert not list((tmp_path / "stash").rglob("*.safetensors"))
    assert stash.main(["restore", "--no-weights", str(tmp_path / "stash"), str(run)]) == 2   # a save-only flag
    stash.restore(tmp_path / "stash", tmp_path / "elsewhere")
    fake_stages.clear()
    summary = runner.run(make_cfg(tmp_path, f"output_dir={tmp_path / 'elsewhere'}"))
    assert fake_stages == ["train/cdsdft", "eval/cdsdft"] and summary["train/cdsdft"]["status"] == "rebuilt"


def test_a_stash_saved_before_left_out_json_still_gives_the_digests(tmp_path, fake_stages):  # noqa: F811
    stash = load()
    cfg = make_cfg(tmp_path)
    runner.run(cfg)
    run = Path(cfg.output_dir)
    weights = run / "train" / "sft" / "adapter" / "adapter_model.safetensors"
    stash.save(run, tmp_path / "stash")
    (tmp_path / "stash" / "train" / "sft" / "left_out.json").unlink()   # as the stashes of 2026-12-04 were saved
    stash.restore(tmp_path / "stash", tmp_path / "elsewhere")
    record = json.loads((tmp_path / "elsewhere" / "train" / "sft" / "left_out.json").read_text())
    assert record == {"adapter/adapter_model.safetensors": {"sha256": sha256_file(weights), "bytes": None}}


def test_save_replaces_the_stash_as_a_whole(tmp_path, fake_stages):  # noqa: F811
    stash = load()
    cfg = make_cfg(tmp_path)
    runner.run(cfg)
    dest = tmp_path / "stash"
    stash.save(Path(cfg.output_dir), dest)
    (dest / "stale.txt").write_text("from an older save")
    stash.save(Path(cfg.output_dir), dest)
    assert not (dest / "stale.txt").exists() and not (tmp_path / "stash.tmp").exists()


def test_bad_folders_are_one_clear_error(tmp_path, capsys):
    stash = load()
    assert stash.main(["save", str(tmp_path), str(tmp_path / "s")]) == 2
    assert "recipe.resolved.yaml" in capsys.readouterr().err and not (tmp_path / "s").exists()
    assert stash.main(["restore", str(tmp_path), str(tmp_path / "r")]) == 2
    assert "stash.json" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert stash.main(["copy", "a", "b"]) == 2
