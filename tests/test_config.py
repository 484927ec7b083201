import pytest

from crossdistill.cli import default_recipe
from crossdistill.config import load_config, parse_overrides, stable_hash
from crossdistill.errors import UserError


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_demo_recipe_loads_and_lists_tasks():
    cfg = load_config(default_recipe())
    assert set(cfg.domains) == {"math", "code", "text", "tools"}
    assert {"seed", "sft", "cdsdft", "cdsdft-onpolicy"} <= set(cfg.methods)   # plain sdft: recipes/ only
    assert len(cfg.eval_tasks()) >= 5


def test_overrides_nested_and_typed(tmp_path):
    p = write(tmp_path, "train: {lr: 1.0e-4}\ndomains: {math: {source: x.jsonl}}\n")
    cfg = load_config(p, ["train.lr=2e-4", "train.lora.r=8", "limit=3", "eval.tasks=[gsm8k, mmlu]"])
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.train.lora.r == 8
    assert cfg.limit == 3
    assert cfg.eval.tasks == ["gsm8k", "mmlu"]


def test_global_limit_caps_every_size(tmp_path):
    p = write(tmp_path, "domains: {math: {source: a, size: 100}, text: {source: b}}\neval: {limit: 50}\n")
    cfg = load_config(p, ["limit=8"])
    assert cfg.effective_limit(cfg.domains["math"].size) == 8
    assert cfg.effective_limit(cfg.domains["text"].size) == 8
    assert cfg.effective_limit(cfg.eval.limit) == 8
    assert load_config(p).effective_limit(100) == 100


def test_unknown_key_names_key_line_and_suggestion(tmp_path):
    p = write(tmp_path, "model: m\ntrain:\n  lr: 1.0e-4\n  epocs: 2\n")
    with pytest.raises(UserError) as e:
        load_config(p)
    msg = str(e.value)
    assert "train.epocs" in msg and "did you mean 'train.epochs'" in msg
    assert "line 4" in msg and str(p) in msg


def test_unknown_override_key_suggests(tmp_path):
    with pytest.raises(UserError, match="did you mean 'train.lora.alpha'"):
        load_config(None, ["train.lora.alpah=3"])


def test_bad_values_are_rejected_with_field():
    with pytest.raises(UserError, match="train.method"):
        load_config(None, ["train.method=dpo"])
    with pytest.raises(UserError, match="train.lr"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(UserError, match="distill.top_p"):
        load_config(None, ["distill.top_p=0"])


def test_unknown_domain_plugin_suggests(tmp_path):
    p = write(tmp_path, "domains: {maths: {source: a.jsonl}}\n")
    with pytest.raises(UserError, match="did you mean 'math'"):
        load_config(p)


def test_named_methods_merge_into_train(tmp_path):
    p = write(tmp_path, "train: {beta: 0.3, lr: 1.0e-3}\nmethods: {seed: null, no-inv: {method: cdsdft, beta: 0}}\n")
    cfg = load_config(p)
    t = cfg.train_config_for("no-inv")
    assert t.beta == 0 and t.lr == pytest.approx(1e-3)
    with pytest.raises(UserError, match="seed model"):
        cfg.train_config_for("seed")
    with pytest.raises(UserError, match="did you mean"):
        cfg.train_config_for("no-iv")


def test_bad_method_override_fails_at_load(tmp_path):
    p = write(tmp_path, "methods: {x: {method: cdsdft, bta: 0}}\n")
    with pytest.raises(UserError, match="methods.x.bta"):
        load_config(p)


def test_parse_overrides_errors():
    with pytest.raises(UserError):
        parse_overrides(["novalue"])
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_invalid_yaml_names_line(tmp_path):
    p = write(tmp_path, "model: m\ntrain: [\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_config(p)


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


@pytest.mark.parametrize("recipe", sorted(p.name for p in __import__("pathlib").Path(__file__).parent.parent.joinpath("recipes").glob("*.yaml")))
def test_shipped_recipes_are_valid(recipe):
    from pathlib import Path

    cfg = load_config(Path(__file__).parent.parent / "recipes" / recipe)
    assert cfg.domains
    # check-*.yaml are mechanism checks read from the training logs (nothing to score); every other recipe evaluates
    assert cfg.eval_tasks() or recipe.startswith("check-")
    for name, over in cfg.methods.items():
        if over is not None:
            cfg.train_config_for(name)


# --- TRL/transformers names, report_to, trainer_args ------------------------------------------------------------

def test_trl_names_are_aliases_of_the_recipe_keys(tmp_path):
    p = write(tmp_path, "train:\n  learning_rate: 3.0e-4\n  per_device_train_batch_size: 2\n"
                        "methods:\n  sft: {num_train_epochs: 2, gradient_accumulation_steps: 4}\n")
    cfg = load_config(p, ["train.lr_scheduler_type=linear", "train.max_seq_length=256"])
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.batch_size == 2
    assert cfg.train.lr_scheduler == "linear" and cfg.train.max_length == 256
    sft = cfg.train_config_for("sft")
    assert sft.epochs == 2.0 and sft.grad_accum == 4 and sft.lr == pytest.approx(3e-4)
    # an override in the TRL name replaces the recipe's own spelling (same key), and vice versa
    assert load_config(p, ["train.lr=1e-5"]).train.lr == pytest.approx(1e-5)
    p2 = write(tmp_path, "train: {lr: 1.0e-4}\n", "r2.yaml")
    assert load_config(p2, ["train.learning_rate=2e-5"]).train.lr == pytest.approx(2e-5)


def test_alias_and_key_together_is_a_located_error(tmp_path):
    p = write(tmp_path, "train:\n  lr: 1.0e-4\n  learning_rate: 2.0e-4\n")
    with pytest.raises(UserError) as e:
        load_config(p)
    assert e.value.field == "train.learning_rate" and e.value.line == 3 and "'lr'" in str(e.value)


def test_report_to_is_validated_with_a_suggestion():
    assert load_config(None, ["train.report_to=mlflow"]).train.report_to == "mlflow"
    assert load_config(None, ["train.report_to=[wandb, tensorboard]"]).train.report_to == ["wandb", "tensorboard"]
    with pytest.raises(UserError) as e:
        load_config(None, ["train.report_to=wandbb"])
    assert e.value.field == "train.report_to" and "did you mean 'wandb'" in str(e.value)
    with pytest.raises(UserError):
        load_config(None, ["train.report_to=[none, wandb]"])


def test_report_to_missing_package_is_a_user_error(monkeypatch):
    import importlib.util

    from crossdistill import training

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    with pytest.raises(UserError) as e:
        training._report_to("wandb")
    assert "pip install wandb" in str(e.value)
    assert training._report_to("none") == "none"


def test_trainer_args_checked_against_training_arguments(tmp_path):
    cfg = load_config(None, ["train.trainer_args.ddp_timeout=600", "train.trainer_args.save_total_limit=3"])
    assert cfg.train.trainer_args == {"ddp_timeout": 600, "save_total_limit": 3}
    with pytest.raises(UserError) as e:
        load_config(None, ["train.trainer_args.ddp_timout=600"])
    assert e.value.field == "train.trainer_args.ddp_timout" and "did you mean 'ddp_timeout'" in str(e.value)
    with pytest.raises(UserError) as e:
        load_config(None, ["train.trainer_args.learning_rate=1"])
    assert "train.lr" in str(e.value)


def test_logging_knobs_do_not_change_the_train_cache_key():
    from crossdistill.config import train_key

    base = load_config(None)
    logged = load_config(None, ["train.report_to=none"])
    assert stable_hash(train_key(base.train)) == stable_hash(train_key(logged.train))
    extra = load_config(None, ["train.trainer_args.max_grad_norm=0.5"])
    assert stable_hash(train_key(base.train)) != stable_hash(train_key(extra.train))


def test_planned_comparisons_are_validated_with_their_line(tmp_path):
    methods = "methods: {seed: null, sft: {method: sft}, sdft: {method: sdft}}\n"
    ok = load_config(write(tmp_path, methods + "compare:\n  - [sft, sdft]\n"))
    assert ok.compare == [["sft", "sdft"]]
    assert load_config(write(tmp_path, methods)).compare == []
    for bad, says in [("  - [sft, sdft]\n  - [seed, sft]\n", "'seed' is not a trained method"),
                      ("  - [sft, sdft]\n  - [sft]\n", "expected [earlier, later]"),
                      ("  - [sft, sdft]\n  - [sft, sft]\n", "expected [earlier, later]"),
                      ("  - [sft, sdft]\n  - [sdft, sft]\n", "listed twice")]:
        with pytest.raises(UserError) as e:
            load_config(write(tmp_path, methods + "compare:\n" + bad))
        assert says in str(e.value) and e.value.field == "compare[1]" and e.value.line == 4
