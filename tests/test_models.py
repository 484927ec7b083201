import pytest
import torch

from crossdistill.errors import UserError
from crossdistill.models import REGISTRY, build_tiny_model, build_tiny_tokenizer, list_models, resolve_model_path


def test_tiny_tokenizer_roundtrips_any_text():
    tok = build_tiny_tokenizer()
    for text in ["hello", "naïve café — ✓ 12+3=15", "def f(x):\n    return x\n"]:
        assert tok.decode(tok(text)["input_ids"]) == text


def test_tiny_chat_template_and_specials():
    tok = build_tiny_tokenizer()
    s = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert s.endswith("<|im_start|>assistant\n")
    ids = tok(s)["input_ids"]
    assert tok.convert_tokens_to_ids("<|im_start|>") in ids
    assert tok.pad_token_id != tok.eos_token_id


def test_tiny_model_is_deterministic_and_generates(tiny):
    model, tok = tiny
    again, _ = build_tiny_model()
    x = torch.tensor([tok("abc")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(x).logits, again(x).logits)
        out = model.generate(x, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == x.shape[1] + 4
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_tiny_model_saves_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path))
    path = resolve_model_path("tiny-random-llama")
    from crossdistill.models import load_model

    model, tok = load_model(path, dtype="float32")
    ref, _ = build_tiny_model()
    x = torch.tensor([tok("xyz")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(x).logits, ref(x).logits, atol=1e-6)


def test_registry_names_and_listing():
    assert "smollm2-135m-instruct" in REGISTRY and "qwen2.5-coder-0.5b-instruct" in REGISTRY
    names = [r[0] for r in list_models()]
    assert names[0] == "smollm2-135m-instruct"


@pytest.mark.parametrize("bad", ["./no/such/folder", "not-a-model", "/tmp"])
def test_wrong_model_is_a_user_error(bad):
    with pytest.raises(UserError):
        resolve_model_path(bad)


def test_hub_ids_pass_through():
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_registry_quant_matches_the_gguf_header_and_is_stated():
    """The note reports and model cards carry: the weights are dequantised from a quantised GGUF. The quant type in
    the registry must be the one the GGUF's own header states (checked when the GGUF is in the cache)."""
    import gguf

    from crossdistill.models import REGISTRY, cache_dir, model_note

    for name, spec in REGISTRY.items():
        assert spec.quant and spec.quant in model_note(name) and spec.hub_id in model_note(name)
        f = cache_dir() / "gguf" / f"{name}.gguf"
        if f.exists():
            ft = gguf.GGUFReader(str(f)).fields["general.file_type"]
            assert gguf.LlamaFileType(int(ft.parts[ft.data[0]][0])).name == f"MOSTLY_{spec.quant}"
    assert model_note("some/local-model") is None


def test_reports_state_the_gguf_quantisation(tmp_path):
    import json

    from crossdistill.report import write_report

    (tmp_path / "results.json").write_text(json.dumps({"model": "smollm2-135m-instruct", "recipe": "r.yaml",
                                                       "seed": 0, "methods": ["seed"], "scores": [], "deltas": []}))
    paths = write_report(str(tmp_path))
    md = (tmp_path / "report.md").read_text()
    assert "dequantised from a Q4_1 GGUF of HuggingFaceTB/SmolLM2-135M-Instruct" in md
    assert "dequantised from a Q4_1 GGUF" in open(paths["html"]).read()
