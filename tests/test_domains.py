"""Every domain verifier on accept and reject fixtures, plus the public helpers eval uses."""
from __future__ import annotations

import json

import pytest

from crossdistill.domains import DOMAINS, VerifyContext, get_domain
from crossdistill.domains.base import degenerate_reason, find_leak, similarity
from crossdistill.domains.code import extract_code
from crossdistill.domains.math import PREFILL as MATH_PREFILL
from crossdistill.domains.math import answers_match, extract_answer, find_equations
from crossdistill.domains.tools import parse_call
from crossdistill.records import Record

CTX = VerifyContext(copy_threshold=0.9, sandbox_timeout_s=10)


def verify(domain: str, rec: Record, text: str, finished: bool = True):
    return get_domain(domain).verify(rec, text, finished, CTX)


# --- registry and templates ----------------------------------------------------------------------

def test_registry_has_the_four_domains_and_suggests_names():
    assert set(DOMAINS) == {"math", "code", "text", "tools"}
    for name in DOMAINS:
        assert get_domain(name).name == name
    from crossdistill.errors import UserError

    with pytest.raises(UserError, match="did you mean 'math'"):
        get_domain("maht")


@pytest.mark.parametrize("name", ["math", "code", "text", "tools"])
def test_rewrite_messages_show_task_and_reference(name):
    rec = {"math": MATH, "code": CODE, "text": TEXT, "tools": TOOLS}[name]
    messages, prefill = get_domain(name).rewrite_messages(rec)
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    user = messages[-1]["content"]
    if name == "tools":   # the expected call is shown as its values, not as the JSON text a seed would copy
        assert rec.response not in user and "Function to call: play_music" in user
        assert prefill == '{"name": "play_music", "arguments": {"genre": '     # the seed writes the values itself
        assert all(f"- {k} = {json.dumps(v)}" in user for k, v in rec.expected_call["arguments"].items())
    else:
        assert rec.response.strip().splitlines()[0] in user          # the reference is shown
    first_prompt_line = rec.prompt_messages()[-1]["content"].splitlines()[0]
    assert first_prompt_line in user                              # and the task
    assert find_leak(prefill) is None
    # the prompt renders with a real chat template, prefill appended to the assistant turn
    from crossdistill.models import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefill
    assert rendered.endswith("<|im_start|>assistant\n" + prefill)


# --- shared checks -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "According to the reference answer, she sold 72 clips.",
    "Here is my response: 72",
    "Now it's your turn to solve it.",
    "Your turn! 48/2 = 24",
    "In your own words: 72",
    "Following the reference solution, 48/2 = 24.",
])
def test_leak_phrases_are_found(text):
    assert find_leak(text)


@pytest.mark.parametrize("text", [
    "She sold 48/2 = 24 clips in May, so 48 + 24 = 72 in total.",
    "Cite the sources in your essay and check the bibliography.",
    "The company provided solutions to its customers.",
])
def test_ordinary_text_is_not_a_leak(text):
    assert find_leak(text) is None


def test_degenerate_detection():
    loop = "the answer is the answer is the answer is the answer is the answer is the answer is " * 3
    assert degenerate_reason(loop)
    assert degenerate_reason("ha" * 100)
    assert degenerate_reason("Natalia sold 48/2 = 24 clips in May. She sold 48 + 24 = 72 clips.") is None
    parallel = "\n".join(f"Week {i}: she walked {i} miles, 6 days a week for a total of {i}*6 = {6 * i} miles"
                          for i in range(1, 6))   # GSM8K-style parallel phrasing is not a loop
    assert degenerate_reason(parallel) is None
    assert degenerate_reason("| year | value |\n|" + "-" * 60 + "|") is None   # a markdown rule is not a loop


def test_similarity_ignores_case_whitespace_and_calc_annotations():
    assert similarity("A  b\nC", "a b c") == 1.0
    assert similarity("48/2 = <<48/2=24>>24", "48/2 = 24") == 1.0
    assert similarity("completely different words here", "nothing shared at all") < 0.3


# --- math ----------------------------------------------------------------------------------------

MATH = Record(
    id="m1", domain="math",
    prompt="Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
           "How many clips did Natalia sell altogether in April and May?",
    response="Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72",
    answer="72")

GOOD_MATH = (MATH_PREFILL + "In April she sold 48 clips. In May she sold half of that, 48 / 2 = 24 clips.\n"
             "Together that makes 48 + 24 = 72 clips.\n#### 72")


def test_math_accepts_right_answer_with_right_arithmetic_and_normalises_target():
    res = verify("math", MATH, GOOD_MATH)
    assert res.accepted and res.reason == "ok" and not res.copied
    assert res.target.endswith("\n#### 72") and res.target.count("####") == 1
    assert res.details["n_equations"] == 2


def test_math_target_gets_the_answer_line_when_missing():
    text = MATH_PREFILL + "May: 48 / 2 = 24. Total: 48 + 24 = 72. The answer is 72."
    res = verify("math", MATH, text)
    assert res.accepted
    assert res.target == text + "\n#### 72"


def test_math_rejects_right_number_with_a_wrong_stated_equation():
    text = MATH_PREFILL + "In May she sold 3 + 4 = 8 clips, so in total 48 + 24 = 72.\n#### 72"
    res = verify("math", MATH, text)
    assert not res.accepted and res.reason == "arithmetic_error"
    assert res.details["bad_equation"] == "3 + 4 = 8"


def test_math_rejects_a_final_answer_that_no_step_produces():
    text = MATH_PREFILL + "In May she sold 48 / 2 = 24 clips. Adding up gives 48 + 24 = 70.\n#### 72"
    assert verify("math", MATH, text).reason == "arithmetic_error"
    text = MATH_PREFILL + "In May she sold 48 / 2 = 24 clips and in April 48.\n#### 72"
    assert verify("math", MATH, text).reason == "answer_not_derived"


def test_math_rejects_true_steps_that_do_not_lead_to_the_answer():
    rec = Record(id="m2", domain="math", prompt="Pizza slices left?", response="4 - 2 = 2\n#### 2", answer="2")
    seen_in_rewrites = (MATH_PREFILL + "She gave 1 x 1 = 1 slice away. Then 2 x 2 = 4.\n"
                        "So the total number of slices left is 4.\n\n#### 2")
    assert verify("math", rec, seen_in_rewrites).reason == "answer_not_derived"
    stated_only = MATH_PREFILL + "We know that 22 - x = $16.\nSo, the answer is 2.\n\nThe answer is 2."
    assert verify("math", rec, stated_only).reason == "answer_not_derived"
    concluded = MATH_PREFILL + "She had 4 slices and gave some away: 4 - 1 - 1 = 2.\nSo 2 slices are left.\n#### 2"
    assert verify("math", rec, concluded).accepted


def test_math_rejects_wrong_number():
    text = MATH_PREFILL + "May: 48 / 2 = 24. Total: 48 + 24 + 1 = 73.\n#### 73"
    res = verify("math", MATH, text)
    assert not res.accepted and res.reason == "wrong_answer"
    assert res.details["pred"] == "73"


def test_math_rejects_leak_truncation_and_repetition():
    leak = MATH_PREFILL + "According to the reference answer, 48 / 2 = 24 and 48 + 24 = 72.\n#### 72"
    assert verify("math", MATH, leak).reason == "leak"
    assert verify("math", MATH, GOOD_MATH, finished=False).reason == "truncated"
    loop = MATH_PREFILL + "She sold 48 / 2 = 24 clips in May and then " * 6 + "\n#### 72"
    assert verify("math", MATH, loop).reason == "degenerate"
    assert verify("math", MATH, "   ").reason == "empty"
    assert verify("math", MATH, MATH_PREFILL + "I do not know.").reason == "no_answer"


def test_math_verbatim_copy_is_accepted_and_flagged():
    res = verify("math", MATH, MATH_PREFILL + MATH.response)
    assert res.accepted and res.copied
    assert res.details["similarity"] >= 0.99


@pytest.mark.parametrize("text,expected", [
    ("#### 1,234", "1234"),
    ("so the result is \\boxed{\\frac{3}{4}}.", "0.75"),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
    ("The answer is $18.", "18"),
    ("The final answer is: 18 dollars per week.", "18"),
    ("Answer: -3.5", "-3.5"),
    ("She pays $1,234.50.", "1234.5"),
    ("He has 5 apples and 7 pears", "7"),
    ("#### 3/4", "0.75"),
    ("The answer is 50%.", "50"),
    ("So the answer is 48 + 24 = 72.", "72"),                        # the result, not the first operand
    ("The final answer is: Janet makes 9 * 2 = $18", "18"),
    ("nothing numeric", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("pred,gold", [
    ("\\boxed{3/4}", "0.75"), ("\\frac{3}{4}", "0.75"), ("\\dfrac{3}{4}", "3/4"), ("$1,234.50", "1234.5"),
    ("18 dollars", "18"), ("18.", "18"), ("-7", "−7"), ("0.3333333", "1/3"),
    ("\\left( 1, 2 \\right)", "(1,2)"), ("\\dfrac{\\sqrt{2}}{2}", "\\frac{\\sqrt2}{2}"),
])
def test_answers_match(pred, gold):
    assert answers_match(extract_answer(pred) if pred.startswith("\\boxed") else pred, gold)


@pytest.mark.parametrize("pred,gold", [("19", "18"), ("0.7", "3/4"), (None, "1"), ("\\sqrt{3}", "\\sqrt{2}")])
def test_answers_do_not_match(pred, gold):
    assert not answers_match(pred, gold)


@pytest.mark.parametrize("text,holds", [
    ("3 + 4 = 7", True), ("3 + 4 = 8", False), ("12 x 3 = 36", True), ("12 × 3 = 35", False),
    ("$1,234.50 + $10 = $1,244.50", True), ("10 / 3 = 3.33", True), ("20% * 50 = 10", True),
    ("3 + 4 = 7 - 2 = 5", True), ("5 × 4 ÷ 2 = 10", True), ("\\frac{1}{2} \\times 8 = 4", True),
    ("2^3 + 1 = 9", True), ("60 / 3/4 = 80", True), ("(2 + 3) * 4 = 20", True), ("(2 + 3) * 4 = 14", False),
    ("3 * 1050 liters = 3000 liters", False), ("8 mice * 6 pups/mouse = 48 mice", True),
    ("35 questions x 2/5 = 14", True), ("Week 1 + Week 2 = 35 + 35 = 70", True), ("20% of 50 = 10", True),
    ("5 times 3 = 16", False), ("$5 per hour * 3 hours = $15", True),
])
def test_stated_arithmetic(text, holds):
    eqs = [e for e in find_equations(text) if e.checkable]
    assert len(eqs) == 1
    assert eqs[0].holds() is holds


@pytest.mark.parametrize("text", ["x = 3", "Let G - 5 = 102", "√16 + 2 = 6", "2x + 3 = 7", "6:00+48=6:48",
                                  "11 a.m. - 2 hours = 9 a.m.", "2 of her kids + 10 of their friends = 20"])
def test_unreadable_chains_are_not_checked(text):
    assert not [e for e in find_equations(text) if e.checkable]


# --- code ----------------------------------------------------------------------------------------

CODE = Record(
    id="c1", domain="code",
    prompt="You are an expert Python programmer, and here is your task: Write a function to find the hypotenuse "
           "of a right triangle. Your code should pass these tests:\n\nassert hypot(3, 4) == 5.0",
    response="import math\n\ndef hypot(a, b):\n    return math.sqrt(a * a + b * b)\n",
    tests=["assert hypot(3, 4) == 5.0", "assert hypot(5, 12) == 13.0", "assert hypot(6, 8) == 10.0"],
    entry_point="hypot")

GOOD_CODE = ("```python\nimport math\n\n\ndef hypot(x, y):\n    \"\"\"Length of the long side.\"\"\"\n"
             "    squares = x ** 2 + y ** 2\n    return float(math.sqrt(squares))\n```\nThis uses Pythagoras.")


def test_code_accepts_code_that_passes_the_tests():
    res = verify("code", CODE, GOOD_CODE)
    assert res.accepted, res
    assert res.target.startswith("```python\nimport math") and res.target.endswith("```")
    assert "Pythagoras" not in res.target   # prose is dropped
    assert not res.copied


def test_code_rejects_wrong_code():
    wrong = "```python\nimport math\n\ndef hypot(a, b):\n    return a + b\n```"
    res = verify("code", CODE, wrong)
    assert not res.accepted and res.reason == "tests_failed"


def test_code_rejects_dropped_import():
    dropped = "```python\ndef hypot(a, b):\n    return math.sqrt(a * a + b * b)\n```"
    res = verify("code", CODE, dropped)
    assert not res.accepted and res.reason in ("tests_failed", "runtime_error")


def test_code_rejects_missing_code_and_syntax_errors():
    assert verify("code", CODE, "I would use the Pythagorean theorem here.").reason == "no_code"
    assert verify("code", CODE, "```python\ndef hypot(a, b)\n    return 1\n```").reason == "syntax_error"


def test_code_copy_is_flagged_and_a_cut_after_the_block_is_fine():
    copy = "```python\n" + CODE.response + "```\nExplanation that rambles on and on"
    res = verify("code", CODE, copy, finished=False)
    assert res.accepted and res.copied
    assert verify("code", CODE, "```python\nimport math\n\ndef hypot(a, b):\n    return math.sq",
                  finished=False).reason == "truncated"


def test_code_verify_many_runs_in_parallel_and_keeps_order():
    dom = get_domain("code")
    res = dom.verify_many([CODE, CODE, CODE], [(GOOD_CODE, True), ("no code", True), ("```python\ndef hypot(a, b): return 0\n```", True)], CTX)
    assert [r.reason for r in res] == ["ok", "no_code", "tests_failed"]


@pytest.mark.parametrize("text,code", [
    ("Here:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1\n"),
    ("```\ndef f():\n    return 2\n```", "def f():\n    return 2\n"),
    ("def f():\n    return 3\n", "def f():\n    return 3\n"),
    ("def f():\n    return 4\n\nThis function returns four.", "def f():\n    return 4\n"),
    ("```python\nprint(1)\n```\n```python\ndef hypot(a, b):\n    return 0\n```", "def hypot(a, b):\n    return 0\n"),
    ("```python\ndef f():\n    return 5", "def f():\n    return 5\n"),
    ("no code at all, just words.", None),
])
def test_extract_code(text, code):
    assert extract_code(text, "hypot") == code


# --- tools ---------------------------------------------------------------------------------------

TOOLS = Record(
    id="t1", domain="tools",
    prompt=[{"role": "system", "content": "You can call functions."},
            {"role": "user", "content": "Play some rock music by Queen, at volume 7."}],
    response='{"name": "play_music", "arguments": {"genre": "rock", "artist": "Queen", "volume": 7}}',
    tools=[{"name": "play_music", "description": "Play music",
            "parameters": {"type": "object", "properties": {"genre": {"type": "string"}, "artist": {"type": "string"},
                                                            "volume": {"type": "integer"}}}}],
    expected_call={"name": "play_music", "arguments": {"genre": "rock", "artist": "Queen", "volume": 7}})


def test_tools_accepts_same_call_with_reordered_args_and_whitespace():
    text = '{"name": "play_music",\n  "arguments": {"volume": 7.0, "artist": " queen ", "genre": "Rock"}}\nEnjoy!'
    res = verify("tools", TOOLS, text)
    assert res.accepted, res
    assert json.loads(res.target) == {"name": "play_music", "arguments": {"volume": 7.0, "artist": " queen ", "genre": "Rock"}}


def test_tools_rejects_wrong_value_name_and_argument_set():
    assert verify("tools", TOOLS, '{"name": "play_music", "arguments": {"genre": "pop", "artist": "Queen", "volume": 7}}').reason == "wrong_value"
    assert verify("tools", TOOLS, '{"name": "stop_music", "arguments": {"genre": "rock", "artist": "Queen", "volume": 7}}').reason == "wrong_name"
    assert verify("tools", TOOLS, '{"name": "play_music", "arguments": {"genre": "rock", "artist": "Queen"}}').reason == "wrong_arguments"
    assert verify("tools", TOOLS, "I will play it for you.").reason == "no_call"


def test_tools_exact_copy_is_flagged():
    res = verify("tools", TOOLS, TOOLS.response)
    assert res.accepted and res.copied and res.target == TOOLS.response


def test_tools_same_call_in_own_tokens_is_self_distilled_and_keeps_its_text():
    own = '{"name": "play_music", "arguments": {"artist": "Queen", "genre": "rock", "volume": 7}}'
    res = verify("tools", TOOLS, own + "\nDone.")
    assert res.accepted and not res.copied and res.target == own      # its own argument order, prose dropped
    wrapped = Record(**{**TOOLS.to_dict(), "response": "<functioncall> " + TOOLS.response + " <end>"})
    assert verify("tools", wrapped, own).target == "<functioncall> " + own + " <end>"
    # a Python literal is not a form the reference uses: the target is the canonical JSON of the call
    lit = verify("tools", TOOLS, "{'name': 'play_music', 'arguments': {'genre': 'rock', 'artist': 'Queen', 'volume': 7}}")
    assert lit.accepted and lit.target == TOOLS.response and lit.copied


@pytest.mark.parametrize("text", [
    'Sure! ```json\n{"name": "f", "arguments": {"x": 1}}\n```',
    '<functioncall> {"function": "f", "parameters": {"x": 1}}',
    '{"name": "f", "arguments": "{\\"x\\": 1}"}',
    "{'name': 'f', 'arguments': {'x': 1}}",
    '{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}',
])
def test_parse_call_shapes(text):
    assert parse_call(text) == {"name": "f", "arguments": {"x": 1}}


# --- text ----------------------------------------------------------------------------------------

TEXT = Record(id="x1", domain="text", prompt="What is the capital of France? Answer in one word.", response="Paris.")


def test_text_accepts_one_sentence_answer_to_one_word_reference():
    res = verify("text", TEXT, "The capital of France is Paris.")
    assert res.accepted and not res.copied and res.target == "The capital of France is Paris."


def test_text_rejects_way_too_long():
    import random

    rng = random.Random(0)
    long = " ".join(f"w{rng.randrange(5000)}" for _ in range(200))
    assert degenerate_reason(long) is None
    assert verify("text", TEXT, long).reason == "too_long"
    essay = Record(id="x2", domain="text", prompt="Describe Paris.", response=" ".join(["word"] * 200))
    assert verify("text", essay, "Paris is a city in France with many museums.").reason == "too_short"


def test_text_rejects_a_copy_of_the_prompt_and_refusals():
    assert verify("text", TEXT, "What is the capital of France? Answer in one word.").reason == "copies_prompt"
    assert verify("text", TEXT, "I'm sorry, but I can't help with that request.").reason == "refusal"


def test_text_rejects_echoing_the_input_unchanged():
    rec = Record(id="x3", domain="text", prompt="Re-write the following sentence in active voice.\n\n"
                 "The ball will be hit by the batsman.", response="The batsman will hit the ball.")
    assert verify("text", rec, "The ball will be hit by the batsman.").reason == "copies_prompt"
    assert verify("text", rec, "The batsman is going to hit the ball.").accepted


def test_text_copy_of_reference_is_flagged():
    res = verify("text", TEXT, "Paris.")
    assert res.accepted and res.copied
