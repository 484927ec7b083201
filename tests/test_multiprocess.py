"""Multi-process runs, for real: `accelerate launch` of the train stage with 2 CPU processes (gloo), and the
distill stage sharded over 2 processes then merged. Slow suite (each launch starts Python and torch twice).

On a machine without GPUs, `accelerate launch --multi_gpu --num_processes 2` spawns the processes (through
torch.distributed.run) and the Trainer's `use_cpu` makes accelerate join them over gloo. (`accelerate launch --cpu
--num_processes 2` starts ONE process unless MPI is set up; the test below would catch that: world 1.)
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "_mp_train.py"
DOMAINS = ("math", "code", "text")
BATCH, STEPS = 4, 4


def _distilled(path: Path) -> Path:
    rows = [{"id": f"{d}-{i}", "domain": d, "prompt": f"Question {i} about {d}, please answer.",
             "original_response": f"orig {d} {i}", "response": f"My own answer for {d} number {i}.",
             "accepted": True, "copied": False, "reason": "ok", "generated": ""}
            for i in range(12) for d in DOMAINS]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _launch(out: Path, distilled: Path, *, procs: int, extra=(), check=True) -> subprocess.CompletedProcess:
    args = [str(SCRIPT), "--distilled", str(distilled), "--out", str(out), "--batch-size", str(BATCH),
            "--max-steps", str(STEPS), *extra]
    if procs == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(procs),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               "0", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(HERE.parent))
    if check:
        assert p.returncode == 0, p.stderr[-4000:]
    return p


def _record(out: Path, rank: int) -> dict:
    return json.loads(Path(f"{out}.rank{rank}.json").read_text())


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from crossdistill.models import prepare_model

    prepare_model("tiny-random-llama")   # once, before any process could race to build it
    root = tmp_path_factory.mktemp("mp")
    distilled = _distilled(root / "distilled.jsonl")
    ddp = root / "ddp" / "train"
    single = root / "single" / "train"
    _launch(ddp, distilled, procs=2)
    _launch(single, distilled, procs=1, extra=("--grad-accum", "2"))   # the same global batch in one process
    return {"root": root, "distilled": distilled, "ddp": ddp, "single": single}


def test_data_parallel_step_equals_the_single_process_step(runs):
    r0, r1 = _record(runs["ddp"], 0), _record(runs["ddp"], 1)
    assert (r0["world"], r1["world"]) == (2, 2)
    ddp_log, one_log = _log(runs["ddp"]), _log(runs["single"])
    assert [r["step"] for r in ddp_log] == [r["step"] for r in one_log] == list(range(1, STEPS + 1))
    for a, b in zip(ddp_log, one_log):
        for key in ("loss", "ce", "div", "inv", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key, a[key], b[key])
        for d in DOMAINS:   # per-domain token counts summed over ranks = the single process's
            assert a.get(f"tokens/{d}") == b.get(f"tokens/{d}")
    wa, wb = _adapter(runs["ddp"]), _adapter(runs["single"])
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6, rtol=1e-5), (k, (wa[k] - wb[k]).abs().max())
    # and the trained weights moved: the comparison is not between two untouched LoRAs
    assert any(wa[k].abs().max() > 0 for k in wa if "lora_B" in k)


def test_ranks_see_disjoint_examples_and_every_batch_holds_two_domains(runs):
    r0, r1 = _record(runs["ddp"], 0), _record(runs["ddp"], 1)
    one = _record(runs["single"], 0)
    b0, b1 = r0["batches"][:STEPS], r1["batches"][:STEPS]       # (a DataLoader prefetches one batch more)
    stream = one["batches"][: 2 * STEPS]
    # the two ranks split the sampler's stream of batches (rank 0 the even ones, rank 1 the odd ones)
    assert b0 == stream[0::2] and b1 == stream[1::2]
    for step in range(STEPS):
        ids0, ids1 = {i for i, _ in b0[step]}, {i for i, _ in b1[step]}
        assert not ids0 & ids1, f"step {step + 1}: both ranks got {ids0 & ids1}"
    for batch in b0 + b1:
        assert len(batch) == BATCH and len({d for _, d in batch}) >= 2


def test_seed_cache_is_computed_once_not_per_rank(runs):
    r0, r1 = _record(runs["ddp"], 0), _record(runs["ddp"], 1)
    assert r0["seed_cache_computed"] + r1["seed_cache_computed"] == 1
    assert r0["stats"]["seed_cache"]["reused"] is False and r1["stats"]["seed_cache"]["reused"] is True
    assert len(list((runs["ddp"] / "seed_cache").glob("*.pt"))) == 1


def test_data_parallel_run_resumes_from_its_checkpoint(runs):
    out = runs["root"] / "resume" / "train"
    p = _launch(out, runs["distilled"], procs=2, extra=("--save-steps", "1", "--crash-at", "3"), check=False)
    assert p.returncode != 0
    assert _record(out, 0).get("crashed") and _record(out, 1).get("crashed")
    assert (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()
    assert not (out / "adapter").exists()
    _launch(out, runs["distilled"], procs=2, extra=("--save-steps", "1"))
    r0, r1 = _record(out, 0), _record(out, 1)
    assert r0["stats"]["resumed_from"].endswith("checkpoint-2") and r0["stats"]["steps"] == STEPS
    assert r0["seed_cache_computed"] + r1["seed_cache_computed"] == 0      # the cache from the first launch
    assert [r["step"] for r in _log(out)] == list(range(1, STEPS + 1))
    # the resumed run ends where the uninterrupted one did
    wa, wb = _adapter(out), _adapter(runs["ddp"])
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6, rtol=1e-5), (k, (wa[k] - wb[k]).abs().max())


RECIPE = """
model: tiny-random-llama
output_dir: {out}
domains:
  math: {{source: {data}/math.jsonl}}
  code: {{source: {data}/code.jsonl}}
distill: {{max_new_tokens: 8, batch_size: 4}}
"""


def test_sharded_distill_over_two_processes_merges_to_the_one_process_file(tmp_path):
    from crossdistill.models import prepare_model

    prepare_model("tiny-random-llama")
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "math.jsonl", "w") as f:
        for i in range(5):
            f.write(json.dumps({"id": f"m{i}", "domain": "math", "prompt": f"What is {i} + {i}?",
                                "response": f"{i} + {i} = {2 * i}.\n#### {2 * i}", "answer": str(2 * i)}) + "\n")
    with open(data / "code.jsonl", "w") as f:
        for i in range(4):
            f.write(json.dumps({"id": f"c{i}", "domain": "code", "prompt": f"Write f{i}(x) returning x + {i}.",
                                "response": f"def f{i}(x):\n    return x + {i}\n", "entry_point": f"f{i}",
                                "tests": [f"assert f{i}(1) == {1 + i}"]}) + "\n")

    def recipe(name):
        p = tmp_path / f"{name}.yaml"
        p.write_text(RECIPE.format(out=tmp_path / name, data=data))
        return str(p)

    cli = [sys.executable, "-m", "crossdistill.cli", "distill"]
    one = subprocess.run(cli + [recipe("one")], capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    sharded = recipe("sharded")
    procs = [subprocess.Popen(cli + [sharded, "--shard", f"{i}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]     # two processes at once
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    merged = subprocess.run(cli + [sharded, "--merge"], capture_output=True, text=True, timeout=600)
    assert merged.returncode == 0, merged.stderr[-3000:]
    a = (tmp_path / "one" / "distill" / "distilled.jsonl").read_bytes()
    b = (tmp_path / "sharded" / "distill" / "distilled.jsonl").read_bytes()
    assert len(a.splitlines()) == 9
    assert a == b
