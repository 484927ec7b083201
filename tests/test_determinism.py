"""Determinism on CPU: the same recipe and seed, run twice into two output folders (two processes with different
PYTHONHASHSEED, so nothing may hang on set or dict-of-set order), give byte-identical data and distilled files,
identical training (losses and adapter weights, bit for bit) and identical eval samples and scores (greedy).

Slow (~30 s: two `crossdistill run` of the tiny recipe of test_crash_resume).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_crash_resume import cli, cli_env, read_jsonl, scores_of, write_tiny_project

pytestmark = pytest.mark.slow


def _strip_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "runtime" not in k and "per_second" not in k} for r in rows]


def test_same_recipe_and_seed_give_identical_outputs_on_cpu(tmp_path):
    from safetensors.torch import load_file

    recipe = write_tiny_project(tmp_path / "project")
    outs = []
    for i, hash_seed in enumerate(("0", "1")):
        env = {**cli_env(tmp_path / "cache"), "PYTHONHASHSEED": hash_seed}
        out = tmp_path / f"out{i}"
        cli(["run", str(recipe), f"output_dir={out}"], env, tmp_path / f"run{i}.log")
        outs.append(out)
    a, b = outs

    same_bytes = ["data/train-math.jsonl", "data/train-code.jsonl", "data/sizes.json", "data/overlap.json",
                  "distill/distilled.jsonl", "distill/generations.jsonl"]
    for task in ("tiny-mc", "tiny-gen"):
        for method in ("seed", "cdsdft"):
            same_bytes.append(f"eval/{method}/samples/{task}.jsonl")
    for rel in same_bytes:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert len(read_jsonl(a / "distill" / "distilled.jsonl")) == 24

    # training: every logged step identical, and the adapter bit for bit
    assert _strip_timing(read_jsonl(a / "train/cdsdft/log.jsonl")) == _strip_timing(read_jsonl(b / "train/cdsdft/log.jsonl"))
    wa = load_file(str(a / "train/cdsdft/adapter/adapter_model.safetensors"))
    wb = load_file(str(b / "train/cdsdft/adapter/adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    # eval: identical scores (timing fields aside), per method and in the collected results.json
    for method in ("seed", "cdsdft"):
        assert scores_of(a / "eval" / method / "results.json") == scores_of(b / "eval" / method / "results.json")
    assert scores_of(a / "results.json") == scores_of(b / "results.json")
    stats = [json.loads((o / "distill/stats.json").read_text()) for o in outs]
    assert stats[0]["domains"].keys() == stats[1]["domains"].keys()
    for d in stats[0]["domains"]:
        for k in ("records", "accepted", "copied", "reasons", "tokens_generated"):
            assert stats[0]["domains"][d][k] == stats[1]["domains"][d][k], (d, k)
