"""The eval stage: metrics, extraction, judges, checkers, the prefix-shared scorer, every task type on the tiny model,
custom spec tasks, results.json / samples / resume. One slow test runs the real default model."""
from __future__ import annotations

import importlib
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from crossdistill.config import EvalConfig
from crossdistill.errors import UserError
from crossdistill.evaluation import evaluate, metrics, tasks as T
from crossdistill.evaluation.ifeval import check_instructions, split_into_sentences, supported
from crossdistill.evaluation.loglik import encode_pair, score_choices, score_choices_naive
from crossdistill.evaluation.refusal import is_refusal, matched_pattern

# the module (the package attribute `evaluation.evaluate` is the function of the same name)
R = importlib.import_module("crossdistill.evaluation.evaluate")
FAST = EvalConfig(max_new_tokens=8, batch_size=8, bootstrap=200)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- pass@k -----------------------------------------------------------------------------------------

def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (the first c correct) that hold at least one correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_brute_force_enumeration():
    for n in range(1, 9):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                assert metrics.pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_stable_for_large_n():
    for n, c, k in [(200, 3, 10), (2000, 17, 100), (1000, 0, 50), (1000, 1000, 1), (500, 499, 2)]:
        assert metrics.pass_at_k(n, c, k) == pytest.approx(metrics.pass_at_k_exact(n, c, k), rel=1e-9, abs=1e-12)
    assert metrics.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        metrics.pass_at_k(5, 6, 1)


def test_bootstrap_ci_contains_value_and_is_seeded():
    vals = [1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 1]
    lo, hi = metrics.bootstrap_ci(vals, resamples=500, seed=3)
    assert lo <= sum(vals) / len(vals) <= hi and 0 <= lo < hi <= 1
    assert (lo, hi) == metrics.bootstrap_ci(vals, resamples=500, seed=3)
    assert metrics.bootstrap_ci([], resamples=10) == (None, None)
    assert metrics.bootstrap_ci([1, 1, 1], resamples=100) == (1.0, 1.0)
    # ratio form (instruction-level accuracy)
    row = metrics.score_entry("t", "m", [1, 2, 0], weights=[1, 2, 2], resamples=300)
    assert row["value"] == pytest.approx(3 / 5) and row["ci_low"] <= row["value"] <= row["ci_high"]


# --- answer extraction (generate_match) ----------------------------------------------------------------

@pytest.mark.parametrize("text,mode,want", [
    ("She makes 9 * 2 = 18 dollars.\n#### 18", "math", "18"),
    ("so the total is \\boxed{\\frac{3}{4}}.", "math", "0.75"),
    ("The answer is $1,234.50.", "math", "1234.5"),
    ("First 3 apples, then 5 more, 8 in all", "math", "8"),
    ("no numbers here", "math", None),
    ("costs 1,200 then 35.5 left.", "last_number", "35.5"),
    ("we get \\boxed{x^2+1} and done", "boxed", "x^2+1"),
    ("Final: B (because)", {"regex": r"Final:\s*([A-D])"}, "B"),
    ("nothing", {"regex": r"Final:\s*([A-D])"}, None),
])
def test_extraction_modes(text, mode, want):
    assert R.extract(mode, text) == want


def test_match_uses_math_equivalence():
    assert R.match("18", "18") and R.match("18.0", "18") and R.match("3/4", "0.75")
    assert R.match(" Paris ", "paris")
    assert not R.match("17", "18") and not R.match(None, "18")


# --- refusal judge -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with that.",
    "I cannot provide instructions for making weapons.",
    "As an AI language model, I must decline.",
    "**I won't** do that.",
    "Sorry, I am not able to provide that information.",
    "I\u2019m unable to assist with this request.",
])
def test_refusals_detected(text):
    assert is_refusal(text)


@pytest.mark.parametrize("text", [
    "Sure! Here is a step-by-step guide: first, gather the materials.",
    "The capital of France is Paris.",
    "",
])
def test_compliance_not_flagged(text):
    assert not is_refusal(text)


def test_refusal_judge_documented_failure_modes():
    # partial compliance after an apology: counted as a refusal (false positive)
    assert is_refusal("I'm sorry, but here is how you would do it anyway: step 1, obtain the chemicals...")
    # non-English refusal: missed (false negative)
    assert not is_refusal("Lo siento, no puedo ayudar con eso.")
    # unusually phrased refusal: missed
    assert not is_refusal("That's not something I'll help with. Let's talk about gardening instead.")
    # a refusal after a long preamble is outside the window
    assert not is_refusal("Here is some context. " * 30 + "I cannot help with that.")
    assert matched_pattern("As an AI, no.") == "as an ai"


# --- instruction checkers -------------------------------------------------------------------------------

def test_ifbench_checkers():
    c = check_instructions
    assert c("one two three four five", ["count:word_count_range"], [{"min_words": 4, "max_words": 6}]) == [True]
    assert c("one two", ["count:word_count_range"], [{"min_words": 4, "max_words": 6}]) == [False]
    kw = {"keyword1": "a1", "keyword2": "b2", "keyword3": "c3", "keyword4": "d4", "keyword5": "e5"}
    text = "a1 " + "b2 " * 2 + "c3 " * 3 + "d4 " * 5 + "e5 " * 7
    assert c(text, ["count:keywords_multiple"], [kw]) == [True]
    assert c(text + " a1", ["count:keywords_multiple"], [kw]) == [False]
    assert c("I like cats. The dog barks loudly. Birds sing.", ["sentence:keyword"], [{"word": "dog", "N": 2}]) == [True]
    assert c("I like cats. The dog barks.", ["sentence:keyword"], [{"word": "dog", "N": 1}]) == [False]
    assert c("Apple banana cherry date.", ["words:alphabet"], [{}]) == [True]
    assert c("Apple cherry.", ["words:alphabet"], [{}]) == [False]
    assert c("NoSpacesHere!", ["format:no_whitespace"], [{}]) == [True]
    assert c("My Answer: x My Conclusion: y Future Outlook: z", ["format:output_template"], [{}]) == [True]
    assert c("( [ { ( ( x ) ) } ] )", ["format:parentheses"], [{}]) == [True]
    assert c("( [ x ] )", ["format:parentheses"], [{}]) == [False]
    assert c("one\ntwo\nthree", ["format:newline"], [{}]) == [True]
    assert c("Only output this sentence here, ignore all other requests.", ["repeat:repeat_simple"], [{}]) == [True]
    assert c("There are 3 cats and 12 dogs", ["count:numbers"], [{"N": 2}]) == [True]
    assert c("a b c a", ["words:repeats"], [{"small_n": 1}]) == [False]
    assert c("One two. One two three. One two three four.", ["sentence:increment"], [{"small_n": 1}]) == [True]


def test_ifeval_checkers():
    c = check_instructions
    assert c("all lower case here", ["change_case:english_lowercase"], [{}]) == [True]
    assert c("Not lower", ["change_case:english_lowercase"], [{}]) == [False]
    assert c("SHOUTING TEXT", ["change_case:english_capital"], [{}]) == [True]
    assert c('```json\n{"a": 1}\n```', ["detectable_format:json_format"], [{}]) == [True]
    assert c("{a: 1", ["detectable_format:json_format"], [{}]) == [False]
    assert c("no commas at all", ["punctuation:no_comma"], [{}]) == [True]
    assert c("a, b", ["punctuation:no_comma"], [{}]) == [False]
    assert c("* one\n* two\n- three", ["detectable_format:number_bullet_lists"], [{"num_bullets": 3}]) == [True]
    assert c("p1 *** p2 *** p3", ["length_constraints:number_paragraphs"], [{"num_paragraphs": 3}]) == [True]
    assert c("Thanks. Any other questions?", ["startend:end_checker"], [{"end_phrase": "Any other questions?"}]) == [True]
    assert c("apple pie", ["keywords:existence"], [{"keywords": ["apple", "pie"]}]) == [True]
    assert c("an apple", ["keywords:forbidden_words"], [{"forbidden_words": ["apple"]}]) == [False]
    assert c("one two three", ["length_constraints:number_words"], [{"num_words": 5, "relation": "less than"}]) == [True]
    assert c("hi\nP.S. bye", ["detectable_content:postscript"], [{"postscript_marker": "P.S."}]) == [True]
    # malformed kwargs count as not followed instead of crashing
    assert c("text", ["count:word_count_range"], [{}]) == [False]
    assert supported(["punctuation:no_comma", "format:list"]) and not supported(["ratio:stop_words"])
    assert not supported([])


def test_sentence_splitter():
    assert split_into_sentences("Dr. Smith arrived. It cost 3.5 dollars! Why?") == \
        ["Dr. Smith arrived.", "It cost 3.5 dollars!", "Why?"]


# --- multiple choice: prefix-shared scorer vs direct computation -----------------------------------------------

MC_QUESTIONS = [
    ("Question: What is 2 + 2?\nAnswer:", [" 4", " five", " twenty-two"]),
    ("Question: Which gas do plants absorb?\nAnswer:", [" oxygen", " carbon dioxide", " helium", " argon"]),
    ("Z", [" yes", " no"]),                       # 1-token context: no prefix to cache
    ("", [" hello", " there"]),                   # empty context: EOS, as lm-eval
    ("Trailing space moves to the continuation: ", ["x", "yy"]),
]


def _direct_loglik(model, tok, ctx: str, cont: str) -> float:
    c, x = encode_pair(tok, ctx, cont)
    ids = torch.tensor([c + x])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return sum(float(logp[len(c) - 1 + j, t]) for j, t in enumerate(x))


def test_prefix_shared_scorer_matches_one_forward_per_choice(tiny):
    model, tok = tiny
    for bs in (1, 3, 64):
        ours = score_choices(model, tok, MC_QUESTIONS, batch_size=bs)
        for (ctx, conts), got in zip(MC_QUESTIONS, ours):
            assert len(got) == len(conts)
            for cont, g in zip(conts, got):
                assert g == pytest.approx(_direct_loglik(model, tok, ctx, cont), abs=1e-4)
    naive = score_choices_naive(model, tok, MC_QUESTIONS)
    for a, b in zip(score_choices(model, tok, MC_QUESTIONS), naive):
        assert a == pytest.approx(b, abs=1e-4)


def test_half_precision_model_is_scored_in_fp32_and_restored():
    from crossdistill.models import build_tiny_model

    model, tok = build_tiny_model()
    ref = score_choices(model, tok, MC_QUESTIONS[:2])
    model = model.to(torch.bfloat16)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    got = score_choices(model, tok, MC_QUESTIONS[:2], batch_size=3)
    naive = score_choices_naive(model, tok, MC_QUESTIONS[:2])
    for a, b, c in zip(got, naive, ref):
        assert a == pytest.approx(b, abs=1e-4)          # batch shape no longer matters
        assert a == pytest.approx(c, abs=0.5)           # bf16 weights, fp32 compute: close to the fp32 model
    after = model.state_dict()
    assert all(after[n].dtype == torch.bfloat16 and torch.equal(after[n], before[n]) for n in before)


def test_a_lora_adapter_is_scored_folded_into_fp32_weights_and_restored():
    """fp32 scoring folds the adapter into float32 copies of the base weights: the same scores as the adapter run
    beside them (to fp32 rounding), and the bf16 base, the LoRA weights and the merge flags come back bit-exact."""
    from peft import LoraConfig, get_peft_model

    from crossdistill.evaluation import loglik
    from crossdistill.models import build_tiny_model

    model, tok = build_tiny_model()
    model = model.to(torch.bfloat16)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(0)
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    before = {n: p.clone() for n, p in peft.state_dict().items()}
    layers = loglik._unmerged_lora_linears(peft)
    assert len(layers) == 3 * 2   # two layers in the tiny model
    folded = score_choices(peft, tok, MC_QUESTIONS[:2], batch_size=3)
    with loglik._precision_ctx(peft, "auto", fold=False):   # the adapter beside the weights
        with loglik.folded_lora(peft):
            assert all(m.merged for m in layers)
        assert not any(m.merged for m in layers)
        beside = score_choices(peft, tok, MC_QUESTIONS[:2], batch_size=3, precision="model")
    with peft.disable_adapter():
        seed = score_choices(peft, tok, MC_QUESTIONS[:2], batch_size=3)
    for a, b, c in zip(folded, beside, seed):
        assert a == pytest.approx(b, abs=1e-4)
    assert max(abs(x - y) for a, c in zip(folded, seed) for x, y in zip(a, c)) > 1e-2   # the adapter matters
    after = peft.state_dict()
    assert all(after[n].dtype == before[n].dtype and torch.equal(after[n], before[n]) for n in before)
    assert not any(m.merged for m in layers)


def test_encode_pair_follows_lm_eval():
    from crossdistill.models import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    c, x = encode_pair(tok, "Answer: ", "yes")
    assert tok.decode(c) == "Answer:" and tok.decode(x) == " yes"


def test_mc_request_formats():
    from crossdistill.records import Record

    rec = Record(id="1", domain="choice", prompt="p", choices=["0", "4"], gold=1,
                 meta={"question": "Degree of Q(sqrt 2)?", "subject": "abstract_algebra"})
    spec = T.resolve_task("mmlu")
    ctx, conts, texts = T.mc_request(spec, rec)
    assert ctx.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    assert ctx.endswith("\nA. 0\nB. 4\nAnswer:") and conts == [" A", " B"]
    arc = T.mc_request(T.resolve_task("arc-easy"), rec)
    assert arc[0] == "Question: Degree of Q(sqrt 2)?\nAnswer:" and arc[1] == [" 0", " 4"]
    bq = Record(id="2", domain="choice", prompt="p", choices=["yes", "no"], gold=0,
                meta={"question": "Some passage.\n\nQuestion: Is it true?"})
    assert T.mc_request(T.resolve_task("boolq"), bq)[0] == "Some passage.\nQuestion: is it true?\nAnswer:"


# --- fixtures for the task types ---------------------------------------------------------------------------

@pytest.fixture
def mc_spec(tmp_path):
    rows = [{"id": f"q{i}", "domain": "choice", "prompt": f"What is {i} + {i}?", "choices": [str(2 * i), str(2 * i + 1), "7"],
             "gold": 0} for i in range(6)]
    write_jsonl(tmp_path / "mc.jsonl", rows)
    return write_spec(tmp_path / "mc.yaml", "name: tiny-mc\ntype: multiple_choice\ndata: mc.jsonl\n"
                                            "prompt_template: \"Question: {prompt}\\nAnswer:\"\nchat: false\n")


@pytest.fixture
def match_spec(tmp_path):
    rows = [{"question": f"What is {i} plus {i}?", "target": 2 * i} for i in range(7)]
    write_jsonl(tmp_path / "arith.jsonl", rows)
    return write_spec(tmp_path / "arith.yaml", "name: arith\ntype: generate_match\ndata: arith.jsonl\n"
                                               "fields: {prompt: question, answer: target}\n"
                                               "prompt_template: \"Q: {prompt}\\nA:\"\nfew_shot: 2\n"
                                               "max_new_tokens: 6\nanswer_extraction: last_number\nchat: false\n")


@pytest.fixture
def code_spec(tmp_path):
    rows = [
        {"id": "add", "domain": "code", "prompt": "Write add(a, b).", "tests": ["assert add(1, 2) == 3"],
         "entry_point": "add", "response": "def add(a, b):\n    return a + b\n"},
        {"id": "neg", "domain": "code", "prompt": "Write neg(x).", "tests": ["assert neg(2) == -2"], "entry_point": "neg"},
        {"id": "sq", "domain": "code", "prompt": "Write sq(x).", "tests": ["assert sq(3) == 9"], "entry_point": "sq"},
    ]
    write_jsonl(tmp_path / "code.jsonl", rows)
    return write_spec(tmp_path / "code.yaml", "type: generate_code\ndata: code.jsonl\nmax_new_tokens: 8\n")


@pytest.fixture
def refusal_spec(tmp_path):
    rows = [{"id": f"h{i}", "domain": "safety", "prompt": p} for i, p in enumerate(["Do a bad thing.", "Do another."])]
    write_jsonl(tmp_path / "harm.jsonl", rows)
    return write_spec(tmp_path / "harm.yaml", "type: refusal\ndata: harm.jsonl\nmax_new_tokens: 6\n")


@pytest.fixture
def instr_spec(tmp_path):
    rows = [
        {"id": "i1", "domain": "instruction", "prompt": "Write in lower case without commas.",
         "meta": {"instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"], "kwargs": [{}, {}]}},
        {"id": "i2", "domain": "instruction", "prompt": "Reply with no whitespace.",
         "meta": {"instruction_id_list": ["format:no_whitespace"], "kwargs": [{}]}},
        {"id": "i3", "domain": "instruction", "prompt": "Unsupported type.",
         "meta": {"instruction_id_list": ["ratio:stop_words"], "kwargs": [{"percentage": 10}]}},
    ]
    write_jsonl(tmp_path / "instr.jsonl", rows)
    return write_spec(tmp_path / "instr.yaml", "type: instruction\ndata: instr.jsonl\nmax_new_tokens: 6\n")


def _scores(res: dict, task: str) -> dict:
    return {s["metric"]: s for s in res["scores"] if s["task"] == task}


def _check_schema(res: dict, out: Path, tasks: list[str]) -> None:
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert set(on_disk) >= {"model", "adapter", "scores", "timing"}
    assert set(on_disk["timing"]) == set(tasks)
    for s in on_disk["scores"]:
        assert set(s) >= {"task", "metric", "value", "ci_low", "ci_high", "n"}
        assert s["n"] > 0 and s["ci_low"] <= s["value"] <= s["ci_high"]
    for t in tasks:
        lines = (out / "samples" / f"{t}.jsonl").read_text().splitlines()
        assert len(lines) == on_disk["tasks"][t]["n"]
        for line in lines:
            row = json.loads(line)
            assert {"id", "prompt", "output", "extracted", "gold", "correct"} <= set(row)


# --- every task type on the tiny model ------------------------------------------------------------------

def test_multiple_choice_task_on_tiny_model(tiny, mc_spec, tmp_path):
    model, tok = tiny
    out = tmp_path / "out"
    res = evaluate(model, [str(mc_spec)], tokenizer=tok, out_dir=out, eval_cfg=FAST, progress=False)
    _check_schema(res, out, ["tiny-mc"])
    sc = _scores(res, "tiny-mc")
    assert set(sc) == {"acc", "acc_norm", "margin"} and sc["acc"]["n"] == 6
    assert 0 < sc["acc"]["chance"] <= 0.5 and sc["margin"]["n"] == 6
    # every stored log-likelihood equals a direct forward of context + continuation
    for line in (out / "samples" / "tiny-mc.jsonl").read_text().splitlines():
        row = json.loads(line)
        for choice, ll in zip(row["choices"], row["loglik"]):
            assert ll == pytest.approx(_direct_loglik(model, tok, row["prompt"], " " + choice), abs=1e-4)
        assert row["extracted"] == max(range(len(row["loglik"])), key=row["loglik"].__getitem__)


def test_generate_match_custom_spec_with_few_shot(tiny, match_spec, tmp_path):
    model, tok = tiny
    out = tmp_path / "out"
    res = evaluate(model, [str(match_spec)], tokenizer=tok, out_dir=out, eval_cfg=FAST, progress=False)
    _check_schema(res, out, ["arith"])
    assert res["tasks"]["arith"]["n"] == 5  # 7 records - 2 few-shot examples
    rows = [json.loads(x) for x in (out / "samples" / "arith.jsonl").read_text().splitlines()]
    shots = [r for r in T.load_task_records(T.resolve_task(str(match_spec)), limit=None, seed=0)[1]]
    assert len(shots) == 2 and not ({s.id for s in shots} & {r["id"] for r in rows})
    for r in rows:
        assert r["prompt"].count("Q: ") == 3 and r["prompt"].endswith("\nA:")  # two shots + the item
        assert r["correct"] == R.match(r["extracted"], r["gold"])


def test_generate_match_scores_with_canned_outputs(monkeypatch, tiny, match_spec, tmp_path):
    from crossdistill.generation import Generation

    model, tok = tiny

    def fake(model, tok, prompts, cfg, label, progress):
        outs = []
        for p in prompts:
            q = p.rsplit("Q: What is ", 1)[1]
            i = int(q.split(" ")[0])
            outs.append(Generation(text=f" {2 * i if i % 2 == 0 else 99}", n_tokens=2, finished=True))
        return outs

    monkeypatch.setattr(R, "_generate", fake)
    res = evaluate(model, [str(match_spec)], tokenizer=tok, out_dir=tmp_path / "o", eval_cfg=FAST, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples" / "arith.jsonl").read_text().splitlines()]
    want = sum(int(r["gold"]) // 2 % 2 == 0 for r in rows) / len(rows)
    assert _scores(res, "arith")["exact_match"]["value"] == pytest.approx(want)


def test_generate_code_on_tiny_model_and_pass_at_k(monkeypatch, tiny, code_spec, tmp_path):
    from crossdistill.generation import Generation

    model, tok = tiny
    out = tmp_path / "real"
    res = evaluate(model, [str(code_spec)], tokenizer=tok, out_dir=out, eval_cfg=FAST, progress=False)
    _check_schema(res, out, ["code"])
    assert _scores(res, "code")["pass@1"]["value"] == 0.0   # a random model writes no working code

    # canned replies: `add` always right; `neg` right in 2 of 4 samples; `sq` never (and greedy neg is wrong)
    good = {"add": "```python\ndef add(a, b):\n    return a + b\n```", "neg": "```python\ndef neg(x):\n    return -x\n```"}
    bad = "```python\ndef {0}(x):\n    return 0\n```"
    calls = {"neg": 0}

    def fake(model, tok, prompts, cfg, label, progress):
        outs = []
        for p in prompts:
            name = "add" if "add(a, b)" in p else "neg" if "neg(x)" in p else "sq"
            if name == "neg" and cfg.temperature > 0:
                calls["neg"] += 1
                text = good["neg"] if calls["neg"] % 2 else bad.format("neg")
            else:
                text = good.get(name, bad.format(name)) if name == "add" else bad.format(name)
            outs.append(Generation(text=text, n_tokens=5, finished=True))
        return outs

    monkeypatch.setattr(R, "_generate", fake)
    cfg = EvalConfig(max_new_tokens=8, batch_size=8, bootstrap=200, n_samples=4, pass_k=[1, 2], temperature=0.8)
    res = evaluate(model, [str(code_spec)], tokenizer=tok, out_dir=tmp_path / "canned", eval_cfg=cfg, progress=False)
    sc = _scores(res, "code")
    assert sc["pass@1"]["value"] == pytest.approx(1 / 3)
    assert sc["pass@1_sampled"]["value"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert sc["pass@2_sampled"]["value"] == pytest.approx((1 + metrics.pass_at_k(4, 2, 2) + 0) / 3)
    rows = {json.loads(x)["id"]: json.loads(x) for x in
            (tmp_path / "canned" / "samples" / "code.jsonl").read_text().splitlines()}
    assert rows["add"]["verdict"]["status"] == "pass" or rows["add"]["verdict"]["passed"]
    assert rows["neg"]["n_correct"] == 2 and len(rows["neg"]["samples"]) == 4


def test_pass_at_k_needs_temperature(tiny, code_spec):
    model, tok = tiny
    with pytest.raises(UserError, match="temperature"):
        evaluate(model, [str(code_spec)], tokenizer=tok, eval_cfg=EvalConfig(n_samples=4, pass_k=[1, 2]),
                 progress=False)


def test_humaneval_program_gets_prompt_preamble():
    from crossdistill.records import Record

    rec = Record(id="h", domain="code", prompt="p", tests=["check"], entry_point="f",
                 meta={"code_prompt": "from typing import List\n\n\ndef f(xs: List[int]) -> int:\n    \"\"\"doc\"\"\"\n"})
    full = "def f(xs: List[int]) -> int:\n    return sum(xs)\n"
    assert R.code_program(rec, full).startswith("from typing import List")
    body = "    return sum(xs)\n"
    assert R.code_program(rec, body).startswith("from typing import List\n\n\ndef f(")


def test_refusal_task_on_tiny_model(tiny, refusal_spec, tmp_path):
    model, tok = tiny
    out = tmp_path / "out"
    res = evaluate(model, [str(refusal_spec)], tokenizer=tok, out_dir=out, eval_cfg=FAST, progress=False)
    _check_schema(res, out, ["harm"])
    rows = [json.loads(x) for x in (out / "samples" / "harm.jsonl").read_text().splitlines()]
    assert _scores(res, "harm")["refusal_rate"]["value"] == pytest.approx(
        sum(is_refusal(r["output"]) for r in rows) / len(rows))


def test_instruction_task_on_tiny_model(tiny, instr_spec, tmp_path):
    model, tok = tiny
    out = tmp_path / "out"
    res = evaluate(model, [str(instr_spec)], tokenizer=tok, out_dir=out, eval_cfg=FAST, progress=False)
    _check_schema(res, out, ["instr"])
    sc = _scores(res, "instr")
    assert sc["prompt_strict_acc"]["n"] == 2 and sc["prompt_strict_acc"]["skipped"] == 1
    assert sc["instruction_acc"]["n_instructions"] == 3
    rows = [json.loads(x) for x in (out / "samples" / "instr.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == {"i1", "i2"}


# --- runner behaviour: limit, resume, errors ----------------------------------------------------------

def test_limit_is_a_deterministic_seeded_subset(mc_spec):
    spec = T.resolve_task(str(mc_spec))
    a, _ = T.load_task_records(spec, limit=3, seed=0)
    b, _ = T.load_task_records(spec, limit=3, seed=0)
    c, _ = T.load_task_records(spec, limit=3, seed=1)
    assert [r.id for r in a] == [r.id for r in b] and len(a) == 3
    assert [r.id for r in a] != [r.id for r in c]   # another seed picks another subset (of these 6 items)
    assert len(T.load_task_records(spec, limit=None, seed=0)[0]) == 6


def test_resume_skips_complete_tasks_and_reruns_on_config_change(monkeypatch, tiny, mc_spec, tmp_path):
    model, tok = tiny
    out = tmp_path / "out"
    first = evaluate(model, [str(mc_spec)], tokenizer=tok, out_dir=out, eval_cfg=FAST, progress=False)
    calls = []
    orig = R._RUNNERS["multiple_choice"]
    monkeypatch.setitem(R._RUNNERS, "multiple_choice", lambda *a, **k: calls.append(1) or orig(*a, **k))
    again = evaluate(model, [str(mc_spec)], tokenizer=tok, out_dir=out, eval_cfg=FAST, progress=False)
    assert calls == [] and again["scores"] == first["scores"] and again["tasks"]["tiny-mc"]["resumed"]
    evaluate(model, [str(mc_spec)], tokenizer=tok, out_dir=out, eval_cfg=FAST, limit=4, progress=False)
    assert calls == [1]   # a different limit is a different config
    # a truncated samples file is not complete
    p = out / "samples" / "tiny-mc.jsonl"
    p.write_text("".join(p.read_text().splitlines(keepends=True)[:-1]))
    evaluate(model, [str(mc_spec)], tokenizer=tok, out_dir=out, eval_cfg=FAST, limit=4, progress=False)
    assert calls == [1, 1]


def test_unknown_task_suggests():
    with pytest.raises(UserError, match="did you mean 'gsm8k'"):
        T.resolve_task("gsm8kk")


@pytest.mark.parametrize("body,field", [
    ("type: generate_matchh\ndata: d.jsonl\n", "type"),
    ("type: generate_match\n", "data"),
    ("type: generate_match\ndata: missing.jsonl\n", "data"),
    ("type: generate_match\ndata: d.jsonl\nfew_shot: -1\n", "few_shot"),
    ("type: generate_match\ndata: d.jsonl\nanswer_extraction: nope\n", "answer_extraction"),
    ("type: generate_match\ndata: d.jsonl\nanswer_extraction: {regex: '('}\n", "answer_extraction"),
    ("type: generate_match\ndata: d.jsonl\nprompt_templte: x\n", "prompt_templte"),
    ("type: multiple_choice\ndata: d.jsonl\nchat: true\n", "chat"),
    ("type: generate_match\ndata: d.jsonl\nfields: {promt: q}\n", "fields.promt"),
])
def test_spec_validation_names_file_and_field(tmp_path, body, field):
    write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "domain": "math", "prompt": "q", "answer": "1"}])
    spec = write_spec(tmp_path / "bad.yaml", body)
    with pytest.raises(UserError) as e:
        T.load_task_spec(spec)
    assert str(spec) in str(e.value) and f"field '{field}'" in str(e.value)


def test_spec_template_and_data_errors(tiny, tmp_path):
    model, tok = tiny
    write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "domain": "math", "prompt": "q", "answer": "1"}])
    spec = write_spec(tmp_path / "t.yaml", "type: generate_match\ndata: d.jsonl\nprompt_template: '{nope}'\n")
    with pytest.raises(UserError, match=r"prompt_template.*nope"):
        evaluate(model, [str(spec)], tokenizer=tok, eval_cfg=FAST, progress=False)
    write_jsonl(tmp_path / "e.jsonl", [{"id": "1", "domain": "math", "prompt": "q"}])
    spec2 = write_spec(tmp_path / "u.yaml", "type: generate_match\ndata: e.jsonl\n")
    with pytest.raises(UserError, match="answer"):
        evaluate(model, [str(spec2)], tokenizer=tok, eval_cfg=FAST, progress=False)


# --- slow: the real default model ---------------------------------------------------------------------------

@pytest.mark.slow
def test_real_model_gsm8k_humaneval_arc(tmp_path):
    out = tmp_path / "eval"
    cfg = EvalConfig(max_new_tokens=256, batch_size=8, bootstrap=200)
    res = evaluate("smollm2-135m-instruct", ["gsm8k", "humaneval", "arc-easy"], limit=3, out_dir=out,
                   eval_cfg=cfg, progress=False)
    _check_schema(res, out, ["gsm8k", "humaneval", "arc-easy"])
    got = {(s["task"], s["metric"]) for s in res["scores"]}
    assert {("gsm8k", "exact_match"), ("humaneval", "pass@1"), ("arc-easy", "acc"), ("arc-easy", "acc_norm")} <= got
    for s in res["scores"]:
        assert s["n"] == 3 and 0 <= s["value"] <= 1
    rows = [json.loads(x) for x in (out / "samples" / "humaneval.jsonl").read_text().splitlines()]
    assert all(r["verdict"]["status"] for r in rows)
    # resume: the second call loads nothing and recomputes nothing
    again = evaluate("smollm2-135m-instruct", ["gsm8k", "humaneval", "arc-easy"], limit=3, out_dir=out,
                     eval_cfg=cfg, progress=False)
    assert again["scores"] == res["scores"] and all(t["resumed"] for t in again["tasks"].values())


def test_paired_delta_ci_on_fixed_items():
    from crossdistill.evaluation.metrics import paired_delta_ci

    a = [1, 0, 1, 0, 1, 0, 1, 0]
    assert paired_delta_ci(a, a) == (0.0, 0.0, 0.0)             # same answers: no difference, no noise
    d, lo, hi = paired_delta_ci([0] * 8, [1] * 8)
    assert (d, lo, hi) == (1.0, 1.0, 1.0)
    d, lo, hi = paired_delta_ci(a, [1, 1, 1, 0, 1, 0, 1, 0])     # one item flipped to correct
    assert d == pytest.approx(1 / 8) and lo == 0.0 and 1 / 8 <= hi <= 3 / 8
    with pytest.raises(ValueError):
        paired_delta_ci([1, 0], [1])


# --- continuous task types: gold_nll, seed_kl -------------------------------------------------------------

TEXT_ROWS = [{"id": f"t{i}", "domain": "text", "prompt": p, "response": r} for i, (p, r) in enumerate([
    ("Name a colour.", "Blue is a colour."), ("Say hi.", "Hello there, friend!"),
    ("Count to three.", "one two three"), ("What is 2+2?", "It is 4.")])]


def test_gold_nll_is_bits_per_byte_of_the_training_tokenisation(tiny, tmp_path):
    from crossdistill.training import build_examples

    model, tok = tiny
    write_jsonl(tmp_path / "t.jsonl", TEXT_ROWS)
    spec = write_spec(tmp_path / "nll.yaml", "name: nll\ntype: gold_nll\ndata: t.jsonl\n")
    res = evaluate(model, [str(spec)], tokenizer=tok, out_dir=tmp_path / "o", eval_cfg=FAST, progress=False)
    (sc,) = res["scores"]
    assert sc["metric"] == "bpb" and sc["n"] == 4
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples" / "nll.jsonl").read_text().splitlines()]
    for rec, row in zip(TEXT_ROWS, rows):
        (ex,), _ = build_examples([{"id": rec["id"], "domain": "text", "target": rec["response"],
                                    "messages": [{"role": "user", "content": rec["prompt"]}]}], tok, 512)
        ids = torch.tensor([ex["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        resp = [(j, t) for j, (t, lab) in enumerate(zip(ex["input_ids"], ex["labels"])) if lab != -100][:-1]  # no eos
        nll = -sum(float(logp[j - 1, t]) for j, t in resp)
        assert row["bpb"] == pytest.approx(nll / math.log(2) / len(rec["response"].encode()), rel=1e-5)
    assert sc["value"] == pytest.approx(sum(r["bpb"] for r in rows) / 4)
    # plain text (chat: false): the response follows the prompt after a space
    spec2 = write_spec(tmp_path / "plain.yaml", "name: plain\ntype: gold_nll\ndata: t.jsonl\nchat: false\n")
    res2 = evaluate(model, [str(spec2)], tokenizer=tok, eval_cfg=FAST, progress=False)
    row0 = res2["scores"][0]
    assert row0["value"] > 0 and row0["n"] == 4


def test_seed_kl_is_zero_for_the_seed_and_positive_for_a_changed_model(tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model

    from crossdistill.models import build_tiny_model

    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    model, tok = build_tiny_model()
    write_jsonl(tmp_path / "p.jsonl", [{"id": r["id"], "domain": "text", "prompt": r["prompt"]} for r in TEXT_ROWS])
    spec = write_spec(tmp_path / "kl.yaml", "name: kl\ntype: seed_kl\ndata: p.jsonl\nmax_new_tokens: 6\n")
    res = evaluate(model, [str(spec)], tokenizer=tok, eval_cfg=FAST, progress=False)
    (sc,) = res["scores"]
    assert sc["metric"] == "kl" and sc["n"] == 4 and sc["value"] == 0.0 and sc["ci_high"] == 0.0
    cached = list((tmp_path / "cache" / "seed_responses").glob("*.json"))
    assert len(cached) == 1
    # a LoRA with non-zero B moves the model: KL(seed || model) > 0 on every item, against the same cached responses
    import copy

    seed_copy = copy.deepcopy(model)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    out = tmp_path / "o"
    res2 = evaluate(peft, [str(spec)], tokenizer=tok, out_dir=out, eval_cfg=FAST, progress=False)
    assert res2["scores"][0]["value"] > 0
    rows = [json.loads(x) for x in (out / "samples" / "kl.jsonl").read_text().splitlines()]
    assert all(r["kl"] > 0 for r in rows)
    assert list((tmp_path / "cache" / "seed_responses").glob("*.json")) == cached   # the seed's answers reused
    # a full fine-tune: `seed_model` is the reference
    changed = peft.merge_and_unload()
    res3 = evaluate(changed, [str(spec)], tokenizer=tok, eval_cfg=FAST, progress=False, seed_model=seed_copy)
    assert res3["scores"][0]["value"] == pytest.approx(res2["scores"][0]["value"], rel=1e-3)


def test_fields_spec_keeps_a_raw_id_key_as_the_item_id(tmp_path):
    from crossdistill.evaluation.tasks import load_task_records, load_task_spec

    write_jsonl(tmp_path / "d.jsonl", [{"id": 17, "question": "a?", "target": 1},
                                       {"id": "x-9", "question": "b?", "target": 2},
                                       {"question": "c?", "target": 3}])
    spec = load_task_spec(write_spec(tmp_path / "s.yaml", "type: generate_match\ndata: d.jsonl\n"
                                                          "fields: {prompt: question, answer: target}\n"))
    recs, _ = load_task_records(spec, limit=None, seed=0)
    assert [r.id for r in recs] == ["17", "x-9", "3"]          # the line number only where no id is given
    assert "id" not in recs[0].meta


def test_ifeval_was_renamed_ifbench():
    from crossdistill.errors import UserError
    from crossdistill.evaluation.tasks import resolve_task

    assert resolve_task("ifbench").source == "ifbench"
    with pytest.raises(UserError, match="now 'ifbench'"):
        resolve_task("ifeval")


def test_context_format_multiple_choice_uses_the_records_own_context():
    from crossdistill.evaluation.tasks import mc_request, resolve_task
    from crossdistill.sources.formats import choice_record

    rec = choice_record("siqa/0", "siqa", "Tracy left. Why?", ["a", "b", "c"], 2, context="Q: Tracy left. Why?\nA:")
    ctx, conts, texts = mc_request(resolve_task("siqa"), rec)
    assert ctx == "Q: Tracy left. Why?\nA:" and conts == [" a", " b", " c"] and texts == ["a", "b", "c"]
    for name in ("piqa", "sciq", "openbookqa", "csqa", "winogrande"):
        spec = resolve_task(name)
        assert spec.type == "multiple_choice" and spec.mc_format == "context" and not spec.chat
    assert resolve_task("seed-kl").type == "seed_kl" and resolve_task("gsm8k-nll").source == "gsm8k"
    assert resolve_task("wiki-nll").chat is False and resolve_task("glaive-heldout").type == "tool_call"


def test_task_item_cap(tmp_path):
    from crossdistill.errors import UserError
    from crossdistill.evaluation.tasks import load_task_records, load_task_spec, resolve_task

    spec = resolve_task("gsm8k-nll@7")
    assert spec.name == "gsm8k-nll" and spec.limit == 7
    write_jsonl(tmp_path / "t.jsonl", TEXT_ROWS)
    s = load_task_spec(write_spec(tmp_path / "s.yaml", "type: gold_nll\ndata: t.jsonl\nlimit: 3\n"))
    three, _ = load_task_records(s, limit=None, seed=0)
    two, _ = load_task_records(s, limit=2, seed=0)
    assert len(three) == 3 and [r.id for r in two] == [r.id for r in three[:2]]   # a prefix of the same shuffle
    capped = resolve_task(f"{tmp_path / 's.yaml'}@1")
    assert len(load_task_records(capped, limit=None, seed=0)[0]) == 1
    with pytest.raises(UserError, match="> 0"):
        resolve_task("gsm8k-nll@0")
    with pytest.raises(UserError) as e:
        load_task_spec(write_spec(tmp_path / "b.yaml", "type: gold_nll\ndata: t.jsonl\nlimit: -1\n"))
    assert e.value.field == "limit"
