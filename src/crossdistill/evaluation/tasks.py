"""Evaluation tasks: the five task types, the builtin task registry, and custom tasks from a spec YAML.

Task types
----------
* ``generate_match``  — generate (greedy), extract the final answer, compare with `record.answer` -> `exact_match`.
* ``generate_code``   — generate, extract the code, run it against `record.tests` in the sandbox -> `pass@1`
  (greedy) and, with `eval.n_samples` > 1, `pass@k_sampled` (unbiased estimator over n samples).
* ``multiple_choice`` — log-likelihood of each choice given the context (no generation) -> `acc`, `acc_norm`.
* ``refusal``         — generate, judge with the pattern judge of `refusal.py` -> `refusal_rate`.
* ``instruction``     — generate, run the instruction checkers of `ifeval.py` -> `prompt_strict_acc`,
  `instruction_acc`.
* ``gold_nll``        — no generation: bits per byte of `record.response` given the prompt -> `bpb` (mean over items
  of the item's bits / UTF-8 bytes; lower is better). With `chat` (default) prompt and response are tokenised exactly
  as the training stage does (`training.build_examples`: chat template, generation prompt, response); with
  `chat: false` the response follows the plain prompt text after a space.
* ``seed_kl``         — KL(seed ‖ model), mean per token, over the seed's own greedy responses to the prompts -> `kl`
  (nats/token; lower = less drift). The seed is the model with its adapter disabled (or `evaluate(seed_model=)`);
  its responses are generated once and cached under $CROSSDISTILL_CACHE/seed_responses/, keyed by the seed,
  the prompts and the generation settings. The seed itself scores exactly 0.
Multiple-choice tasks also report `margin`: the gold choice's log-likelihood minus the best other choice's
(nats, per item; > 0 where the item is right), and carry `chance` (mean 1/#choices) on their `acc` row.
* ``tool_call``       — generate, parse the call(s), check them by the BFCL AST-checker rules (`toolcall.py`) against
  `record.expected_call` or `meta.ground_truth` -> `call_acc`. Custom specs read BFCL files directly: `data:` a
  BFCL question file ({id, question, function}) and `answers:` its possible-answer file ({id, ground_truth}).

Builtin tasks (BUILTIN_TASKS): gsm8k, math500 (generate_match); humaneval, mbpp, mbpp-heldout (generate_code);
arc-easy, arc-challenge, mmlu, hellaswag, boolq, piqa, sciq, openbookqa, siqa, csqa, winogrande (multiple_choice);
refusal (on harmbench); ifbench (IFBench's prompts, the 167 of 294 whose instructions all have a checker);
gsm8k-nll, math500-nll, mbpp-heldout-nll, alpaca-heldout-nll, wiki-nll (gold_nll); seed-kl (seed_kl on the 294
alpaca-heldout prompts, the first 64 tokens of each answer).

Prompt formats of the builtin tasks
-----------------------------------
Generation tasks use the record's own prompt (the same text the training stage shows the model) rendered with
the model's chat template: gsm8k / math500 the bare problem; humaneval "Complete the following Python function.
Reply with the complete function in a ```python code block." + the signature and docstring; mbpp the standard MBPP
prompt ("You are an expert Python programmer, and here is your task: {text} Your code should pass these
tests:\\n\\n{tests}"); refusal the HarmBench behaviour; ifbench the IFBench prompt.

Multiple-choice tasks follow lm-evaluation-harness (plain text, no chat template, continuation = " " + choice):
* arc-easy / arc-challenge: "Question: {question}\\nAnswer:" / " {choice text}";
* mmlu: "The following are multiple choice questions (with answers) about {subject}.\\n\\n{question}\\nA. ..\\n
  B. ..\\nC. ..\\nD. ..\\nAnswer:" / " A" .. " D" (lm-eval's `mmlu` zero-shot; acc_norm == acc since all
  continuations are one letter);
* hellaswag: "{activity_label}: {ctx_a} {ctx_b.capitalize()}" cleaned like lm-eval (" [title]" -> ". ", other
  "[...]" removed, double spaces collapsed) / " {ending}";
* boolq: "{passage}\\nQuestion: {question}?\\nAnswer:" / " no" | " yes";
* piqa / csqa: "Question: {q}\\nAnswer:"; sciq: "{support}\\nQuestion: {q}\\nAnswer:"; openbookqa: "{question_stem}";
  siqa: "Q: {context} {question}\\nA:" (continuation " " + choice); winogrande: each filled-in sentence scored
  whole after an empty context (lm-eval's partial scoring needs a context per choice).
`acc_norm` divides each choice's log-likelihood by the number of characters of the choice text (lm-eval).

A task name (built-in or spec path) followed by ``@N`` is capped at N items (e.g. ``seed-kl@120``); so is a spec with
``limit: N``. The cap takes the first N of the task's seeded shuffle, under the recipe's ``eval.limit``.

Custom tasks (``--tasks path/to/spec.yaml`` wherever a task name works)
----------------------------------------------------------------------
    name: my-arith                    # task name in results.json (default: the file's stem)
    type: generate_match              # generate_match | generate_code | multiple_choice | refusal | instruction
    data: arith.jsonl                 # JSONL; relative paths are relative to the spec file
    fields: {prompt: question, answer: target}   # optional: raw key -> Record field mapping (see below)
    prompt_template: "Q: {prompt}\\nA:"           # Python format string over the record's fields and meta
    few_shot: 2                       # examples prepended to every prompt
    few_shot_source: train.jsonl      # optional; default: drawn from `data` and removed from the scored set
    max_new_tokens: 64
    answer_extraction: math           # math (default) | last_number | boxed | {regex: "answer: (\\\\d+)"}
    chat: false                       # true: render with the chat template (few-shot as earlier turns)
    stop: ["\\n\\n"]                   # optional stop strings (default: ["\\n\\n"] for non-chat few-shot prompts)
`data` lines are Record objects (records.py) or, with `fields:`, raw objects whose keys are mapped onto Record
fields (`fields: {Record field: raw key}`); unmapped raw keys go to `meta` and can be used in the template. A raw
line keeps its raw `id` key as the item id; one without gets its line number. Few-shot examples are drawn with a seeded shuffle (the same examples every
run) and shown with their target: `response` if present, else `answer` (generate), the gold choice (multiple
choice). Every problem raises UserError naming the spec file and the field.
"""
from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..domains.registry import kind_for_task_type, required_fields
from ..errors import UserError, suggest
from ..records import Record, record_from_dict

TASK_TYPES = ("generate_match", "generate_code", "multiple_choice", "refusal", "instruction", "gold_nll", "seed_kl",
              "tool_call")
EXTRACTIONS = ("math", "last_number", "boxed")


@dataclass
class TaskSpec:
    name: str
    type: str
    source: str | None = None            # builtin: a `sources.load_source` name
    data: str | None = None              # custom: a JSONL path
    fields: dict[str, str] | None = None
    prompt_template: str | None = None
    few_shot: int = 0
    few_shot_source: str | None = None
    answers: str | None = None           # tool_call: a BFCL possible-answer JSONL ({id, ground_truth}) joined by id
    limit: int | None = None             # the task's own item cap (`name@N`, or `limit:` in a spec), under eval.limit
    max_new_tokens: int | None = None
    answer_extraction: str | dict = "math"
    chat: bool = True
    stop: list[str] | None = None
    mc_format: str = "template"          # template | arc | mmlu | hellaswag | boolq | context (meta.context)
    spec_file: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


BUILTIN_TASKS: dict[str, TaskSpec] = {
    "gsm8k": TaskSpec("gsm8k", "generate_match", source="gsm8k"),
    "math500": TaskSpec("math500", "generate_match", source="math500"),
    "humaneval": TaskSpec("humaneval", "generate_code", source="humaneval"),
    "mbpp": TaskSpec("mbpp", "generate_code", source="mbpp"),
    "mbpp-heldout": TaskSpec("mbpp-heldout", "generate_code", source="mbpp-heldout"),
    "arc-easy": TaskSpec("arc-easy", "multiple_choice", source="arc-easy", chat=False, mc_format="arc"),
    "arc-challenge": TaskSpec("arc-challenge", "multiple_choice", source="arc-challenge", chat=False, mc_format="arc"),
    "mmlu": TaskSpec("mmlu", "multiple_choice", source="mmlu", chat=False, mc_format="mmlu"),
    "hellaswag": TaskSpec("hellaswag", "multiple_choice", source="hellaswag", chat=False, mc_format="hellaswag"),
    "boolq": TaskSpec("boolq", "multiple_choice", source="boolq", chat=False, mc_format="boolq"),
    # A refusal shows in the first sentences; 96 tokens judge it at a fraction of the cost.
    "refusal": TaskSpec("refusal", "refusal", source="harmbench", max_new_tokens=96),
    # IFBench's prompts, scored on the ones whose every instruction type has a checker in ifeval.py (167 of 294).
    "ifbench": TaskSpec("ifbench", "instruction", source="ifbench"),
    # Above-chance multiple choice for small models (validation splits; lm-eval prompt formats in meta.context).
    **{n: TaskSpec(n, "multiple_choice", source=n, chat=False, mc_format="context")
       for n in ("piqa", "sciq", "openbookqa", "siqa", "csqa", "winogrande")},
    # Continuous, generation-free: bits per byte of held-out reference responses (chat template as in training)
    # and of general text (plain text), and the drift from the seed on held-out general prompts.
    "gsm8k-nll": TaskSpec("gsm8k-nll", "gold_nll", source="gsm8k"),
    "math500-nll": TaskSpec("math500-nll", "gold_nll", source="math500"),
    "mbpp-heldout-nll": TaskSpec("mbpp-heldout-nll", "gold_nll", source="mbpp-heldout"),
    "alpaca-heldout-nll": TaskSpec("alpaca-heldout-nll", "gold_nll", source="alpaca-heldout"),
    "wiki-nll": TaskSpec("wiki-nll", "gold_nll", source="wiki-passages", chat=False),
    "seed-kl": TaskSpec("seed-kl", "seed_kl", source="alpaca-heldout", max_new_tokens=64),
    # Tool calls on held-out Glaive conversations (BFCL AST-checker rules, evaluation/toolcall.py).
    "glaive-heldout": TaskSpec("glaive-heldout", "tool_call", source="glaive-heldout", max_new_tokens=128),
    # The Berkeley Function-Calling Leaderboard's `simple` (Python) category: 400 requests, none in any training set.
    "bfcl-simple": TaskSpec("bfcl-simple", "tool_call", source="bfcl-simple", max_new_tokens=128),
}
RENAMED_TASKS = {"ifeval": "ifbench"}


def task_names() -> list[str]:
    return list(BUILTIN_TASKS)


def is_spec_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def resolve_task(name: str) -> TaskSpec:
    """A builtin task name or a spec YAML path -> TaskSpec (validated). `NAME@N` caps the task at N items (the
    first N of the same seeded shuffle; `eval.limit` still applies): e.g. `gsm8k-nll@100` beside MC tasks at 200."""
    m = re.fullmatch(r"(.+)@(\d+)", name)
    if m:
        n = int(m.group(2))
        if n <= 0:
            raise UserError(f"'{name}': the item cap after '@' must be > 0", field="tasks")
        return dataclasses.replace(resolve_task(m.group(1)), limit=n)
    if is_spec_path(name):
        return load_task_spec(name)
    if name in BUILTIN_TASKS:
        return dataclasses.replace(BUILTIN_TASKS[name])
    if name in RENAMED_TASKS:
        raise UserError(f"eval task '{name}' is now '{RENAMED_TASKS[name]}' (it scores IFBench's prompts)",
                        field="tasks")
    raise UserError(f"unknown eval task '{name}'{suggest(name, BUILTIN_TASKS)}; "
                    f"builtin tasks: {', '.join(BUILTIN_TASKS)}; "
                    "or give the path of a task spec .yaml", field="tasks")


# --- spec YAML -------------------------------------------------------------------------------------

_SPEC_KEYS = ("name", "type", "data", "fields", "prompt_template", "few_shot", "few_shot_source", "max_new_tokens",
              "answer_extraction", "chat", "stop", "answers", "limit")


def load_task_spec(path: str | Path) -> TaskSpec:
    """Read and validate a task spec YAML; every problem is a UserError naming the file and the field."""
    p = Path(path)
    f = str(p)
    if not p.exists():
        raise UserError("task spec file not found", file=f)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"invalid YAML: {getattr(e, 'problem', e)}", file=f,
                        line=(mark.line + 1) if mark else None) from None
    if not isinstance(data, dict):
        raise UserError("a task spec must be a mapping (name, type, data, prompt_template, ...)", file=f)

    def err(msg: str, key: str) -> UserError:
        return UserError(msg, file=f, field=key)

    for k in data:
        if k not in _SPEC_KEYS:
            raise err(f"unknown key{suggest(k, _SPEC_KEYS)}; valid: {', '.join(_SPEC_KEYS)}", str(k))
    name = data.get("name", p.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise err("must be a non-empty name of letters, digits, '_', '-', '.'", "name")
    ttype = data.get("type")
    if ttype is None:
        raise err(f"required; one of {', '.join(TASK_TYPES)}", "type")
    if ttype not in TASK_TYPES:
        raise err(f"unknown task type '{ttype}'{suggest(ttype, TASK_TYPES)}; one of {', '.join(TASK_TYPES)}", "type")
    raw_data = data.get("data")
    if not isinstance(raw_data, str) or not raw_data.strip():
        raise err("required: the path of a JSONL file", "data")
    data_path = _resolve_rel(raw_data, p)
    if not data_path.exists():
        raise err(f"data file not found: {data_path}", "data")
    fields_map = data.get("fields")
    if fields_map is not None:
        if not isinstance(fields_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in fields_map.items()):
            raise err("must map Record field names to raw keys, e.g. {prompt: question, answer: label}", "fields")
        known = {fl.name for fl in dataclasses.fields(Record)}
        for k in fields_map:
            if k not in known:
                raise err(f"'{k}' is not a Record field{suggest(k, sorted(known))}; "
                          f"fields: {', '.join(sorted(known))}", f"fields.{k}")
    tmpl = data.get("prompt_template")
    if tmpl is not None:
        if not isinstance(tmpl, str) or not tmpl.strip():
            raise err("must be a non-empty Python format string, e.g. 'Q: {prompt}\\nA:'", "prompt_template")
        try:
            list(string.Formatter().parse(tmpl))
        except ValueError as e:
            raise err(f"not a valid format string: {e} (write literal braces as '{{{{' and '}}}}')",
                      "prompt_template") from None
    few = data.get("few_shot", 0)
    if not isinstance(few, int) or isinstance(few, bool) or few < 0:
        raise err("must be an integer >= 0", "few_shot")
    fss = data.get("few_shot_source")
    if fss is not None:
        if not isinstance(fss, str):
            raise err("must be the path of a JSONL file", "few_shot_source")
        if not _resolve_rel(fss, p).exists():
            raise err(f"file not found: {_resolve_rel(fss, p)}", "few_shot_source")
        fss = str(_resolve_rel(fss, p))
    mnt = data.get("max_new_tokens")
    if mnt is not None and (not isinstance(mnt, int) or isinstance(mnt, bool) or mnt <= 0):
        raise err("must be an integer > 0", "max_new_tokens")
    ext = data.get("answer_extraction", "math")
    ext = _validate_extraction(ext, err)
    if "answer_extraction" in data and ttype != "generate_match":
        raise err("only applies to type generate_match", "answer_extraction")
    chat = data.get("chat", ttype != "multiple_choice")
    if not isinstance(chat, bool):
        raise err("must be true or false", "chat")
    if ttype == "multiple_choice" and chat:
        raise err("multiple_choice tasks score plain-text log-likelihoods; set chat: false", "chat")
    stop = data.get("stop")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
        raise err("must be a list of non-empty strings", "stop")
    task_limit = data.get("limit")
    if task_limit is not None and (not isinstance(task_limit, int) or isinstance(task_limit, bool) or task_limit <= 0):
        raise err("must be an integer > 0 (the task's own item cap)", "limit")
    answers = data.get("answers")
    if answers is not None:
        if ttype != "tool_call":
            raise err("only applies to type tool_call (a BFCL possible-answer file)", "answers")
        if not isinstance(answers, str) or not _resolve_rel(answers, p).exists():
            raise err(f"file not found: {answers}", "answers")
        answers = str(_resolve_rel(answers, p))
    return TaskSpec(name=name, type=ttype, data=str(data_path), fields=fields_map, prompt_template=tmpl,
                    few_shot=few, few_shot_source=fss, max_new_tokens=mnt, answer_extraction=ext, chat=chat,
                    stop=stop, mc_format="template", spec_file=f, answers=answers, limit=task_limit)


def _resolve_rel(path: str, spec: Path) -> Path:
    q = Path(path).expanduser()
    if q.is_absolute():
        return q
    beside = spec.parent / q
    return beside if beside.exists() or not q.exists() else q


def _validate_extraction(ext: Any, err) -> str | dict:
    if isinstance(ext, str):
        if ext.startswith("regex:"):
            ext = {"regex": ext[len("regex:"):]}
        elif ext in EXTRACTIONS:
            return ext
        else:
            raise err(f"unknown extraction '{ext}'; one of {', '.join(EXTRACTIONS)} or {{regex: PATTERN}}",
                      "answer_extraction")
    if isinstance(ext, dict):
        if set(ext) != {"regex"} or not isinstance(ext["regex"], str) or not ext["regex"]:
            raise err("a regex extraction is {regex: PATTERN} (the first group is the answer)", "answer_extraction")
        try:
            re.compile(ext["regex"])
        except re.error as e:
            raise err(f"invalid regex: {e}", "answer_extraction") from None
        return {"regex": ext["regex"]}
    raise err(f"unknown extraction {ext!r}; one of {', '.join(EXTRACTIONS)} or {{regex: PATTERN}}",
              "answer_extraction")


# --- records -----------------------------------------------------------------------------------------

def read_task_file(path: str, spec: TaskSpec, *, what: str = "data") -> list[Record]:
    """A custom task's JSONL -> Records (Record schema, or raw objects mapped by `spec.fields`)."""
    from ..sources.files import iter_objects   # the project's one line-numbered JSON(L) reader

    def objects():   # the reader's own errors (malformed JSON) also name the spec the file belongs to
        try:
            yield from iter_objects(Path(path))
        except UserError as e:
            raise UserError(f"{e.message} [{what} of task spec {spec.spec_file}]", file=path, line=e.line) from None

    out: list[Record] = []
    seen: set[str] = set()
    answers = _bfcl_answers(spec) if spec.type == "tool_call" and spec.answers and what == "data" else None
    for lineno, obj in objects():
        if not isinstance(obj, dict):
            raise UserError(f"expected a JSON object [{what} of task spec {spec.spec_file}]", file=path, line=lineno)
        if spec.type == "tool_call" and not spec.fields and "function" in obj and "question" in obj:
            obj = _from_bfcl(obj, answers, path, lineno)
        if spec.fields:
            obj = _map_fields(obj, spec, lineno)
        try:
            rec = record_from_dict(obj, file=path, line=lineno, required=required_fields(obj.get("domain")))
        except UserError as e:
            hint = "" if spec.fields else " (raw data? map its keys with `fields:` in the spec)"
            raise UserError(f"{e}{hint} [{what} of task spec {spec.spec_file}]") from None
        if rec.id in seen:
            raise UserError(f"duplicate id '{rec.id}'", file=path, line=lineno, field="id")
        seen.add(rec.id)
        _check_record_for_type(rec, spec, path, lineno)
        out.append(rec)
    if not out:
        raise UserError(f"no records [{what} of task spec {spec.spec_file}]", file=path)
    return out


def _bfcl_answers(spec: TaskSpec) -> dict[str, Any]:
    from ..sources.files import iter_objects

    out = {}
    for lineno, obj in iter_objects(Path(spec.answers)):
        if not isinstance(obj, dict) or "id" not in obj or "ground_truth" not in obj:
            raise UserError("expected {id, ground_truth} (a BFCL possible-answer line)", file=spec.answers,
                            line=lineno, field="ground_truth")
        out[str(obj["id"])] = obj["ground_truth"]
    return out


def _from_bfcl(obj: dict, answers: dict | None, path: str, lineno: int) -> dict:
    """A BFCL question line as a Record dict (`sources.formats.conv_bfcl`); the ground truth from the line itself
    or the spec's `answers` file."""
    from ..sources.formats import Where, conv_bfcl

    gt = obj.get("ground_truth", (answers or {}).get(str(obj.get("id", lineno))))
    rec = conv_bfcl(obj, gt, "", Where(path, lineno))
    return {k: v for k, v in rec.to_dict().items() if k != "source"}


def _map_fields(obj: dict, spec: TaskSpec, lineno: int) -> dict:
    d: dict[str, Any] = {}
    used = set()
    for target, raw_key in (spec.fields or {}).items():
        if raw_key not in obj:
            raise UserError(f"raw key '{raw_key}' (mapped to '{target}' in the spec) is missing from the data line "
                            f"{lineno}", file=spec.spec_file, field=f"fields.{target}")
        d[target] = obj[raw_key]
        used.add(raw_key)
    meta = dict(d.get("meta") or {})
    for k, v in obj.items():
        if k not in used:
            meta.setdefault(k, v)
    if "id" not in d and obj.get("id") is not None:   # a raw `id` key stays the item's id (not a meta key)
        d["id"] = obj["id"]
        meta.pop("id", None)
    d["meta"] = meta
    d.setdefault("id", str(lineno))
    d.setdefault("domain", kind_for_task_type(spec.type))
    if d.get("answer") is not None and not isinstance(d["answer"], str):
        d["answer"] = str(d["answer"])
    if isinstance(d.get("gold"), str) and d["gold"].strip().lstrip("-").isdigit():
        d["gold"] = int(d["gold"])
    if d.get("id") is not None and not isinstance(d["id"], str):
        d["id"] = str(d["id"])
    return d


def _check_record_for_type(rec: Record, spec: TaskSpec, path: str, lineno: int) -> None:
    need = {"generate_match": ("answer",), "generate_code": ("tests",), "multiple_choice": ("choices", "gold"),
            "refusal": (), "instruction": (), "gold_nll": ("response",), "seed_kl": (), "tool_call": ()}[spec.type]
    if spec.type == "tool_call" and not rec.expected_call and not rec.meta.get("ground_truth"):
        raise UserError(f"type tool_call needs expected_call or meta.ground_truth [data of task spec "
                        f"{spec.spec_file}]", file=path, line=lineno, field="expected_call")
    for fld in need:
        v = getattr(rec, fld)
        if v is None or (isinstance(v, (list, str)) and not v):
            raise UserError(f"type {spec.type} needs '{fld}' on every record [data of task spec {spec.spec_file}]",
                            file=path, line=lineno, field=fld)
    if spec.type == "instruction" and not rec.meta.get("instruction_id_list"):
        raise UserError(f"type instruction needs meta.instruction_id_list [data of task spec {spec.spec_file}]",
                        file=path, line=lineno, field="meta.instruction_id_list")


def template_fields(rec: Record) -> dict:
    """What a prompt_template can name: the record's meta keys, then its own fields (prompt as text)."""
    d = dict(rec.meta)
    d.update({"id": rec.id, "domain": rec.domain, "prompt": rec.prompt_text(), "response": rec.response,
              "answer": rec.answer, "choices": rec.choices, "gold": rec.gold, "entry_point": rec.entry_point,
              "tests": "\n".join(rec.tests or [])})
    d.setdefault("question", rec.meta.get("question", rec.prompt_text()))
    return d


def fill_template(spec: TaskSpec, rec: Record) -> str:
    try:
        return spec.prompt_template.format(**template_fields(rec))  # type: ignore[union-attr]
    except KeyError as e:
        avail = ", ".join(sorted(template_fields(rec)))
        raise UserError(f"names {{{e.args[0]}}}, which record '{rec.id}' does not have (available: {avail})",
                        file=spec.spec_file, field="prompt_template") from None
    except (IndexError, ValueError, AttributeError) as e:
        raise UserError(f"cannot be filled for record '{rec.id}': {e}", file=spec.spec_file,
                        field="prompt_template") from None


def load_task_records(spec: TaskSpec, *, limit: int | None, seed: int) -> tuple[list[Record], list[Record]]:
    """(scored records, few-shot examples). Deterministic: a seeded shuffle, then the first `limit`.

    Few-shot examples come from `few_shot_source`, else the first `few_shot` of a separately seeded shuffle of
    the data, which are then removed from the scored set. The same seed gives the same items for every model.
    """
    from ..sources import load_source, take

    records = read_task_file(spec.data, spec) if spec.data else load_source(spec.source)
    shots: list[Record] = []
    if spec.few_shot:
        if spec.few_shot_source:
            pool = read_task_file(spec.few_shot_source, spec, what="few_shot_source")
            shots = take(pool, spec.few_shot, seed + 1)
        else:
            if spec.few_shot >= len(records):
                raise UserError(f"few_shot={spec.few_shot} leaves nothing to score in {len(records)} records",
                                file=spec.spec_file, field="few_shot")
            shots = take(records, spec.few_shot, seed + 1)
            ids = {r.id for r in shots}
            records = [r for r in records if r.id not in ids]
    if spec.type == "instruction":
        from .ifeval import supported

        records = [r for r in records if supported(list(r.meta.get("instruction_id_list") or []))]
    if spec.limit is not None:
        limit = spec.limit if limit is None else min(limit, spec.limit)
    return take(records, limit, seed), shots


def count_unsupported(spec: TaskSpec) -> int:
    """Instruction prompts in the task's data with an instruction type outside the checker subset."""
    from .ifeval import supported

    if spec.data:
        records = read_task_file(spec.data, spec)
    else:
        from ..sources import load_source

        records = load_source(spec.source)
    return sum(1 for r in records if not supported(list(r.meta.get("instruction_id_list") or [])))


# --- multiple-choice contexts (lm-eval conventions) ------------------------------------------------------

_HELLASWAG_PREFIX = "Choose the best continuation of the text.\n\n"


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def mc_request(spec: TaskSpec, rec: Record) -> tuple[str, list[str], list[str]]:
    """(context, continuations, choice texts for acc_norm lengths) of one multiple-choice record."""
    m = rec.meta
    choices = [str(c) for c in (rec.choices or [])]
    fmt = spec.mc_format
    if fmt == "context":
        ctx = str(m.get("context", ""))
    elif fmt == "template" and spec.prompt_template:
        ctx = fill_template(spec, rec)
    elif fmt == "mmlu":
        subject = str(m.get("subject", "")).replace("_", " ").strip()
        head = f"The following are multiple choice questions (with answers) about {subject}.\n\n" if subject else ""
        opts = "".join(f"\n{'ABCDEFGHIJ'[i]}. {c}" for i, c in enumerate(choices))
        ctx = f"{head}{_question(rec).strip()}{opts}\nAnswer:"
        letters = ["ABCDEFGHIJ"[i] for i in range(len(choices))]
        return ctx, [" " + x for x in letters], letters
    elif fmt == "hellaswag":
        if "ctx_a" in m:
            ctx_b = str(m.get("ctx_b", ""))
            raw = f"{m.get('activity_label', '')}: {m['ctx_a']} {ctx_b[:1].upper() + ctx_b[1:]}"
        else:  # sources' record: meta.question = instruction + cleaned "activity_label: ctx"
            raw = _question(rec)
            if raw.startswith(_HELLASWAG_PREFIX):
                raw = raw[len(_HELLASWAG_PREFIX):]
        ctx = _hellaswag_clean(raw)
        choices = [_hellaswag_clean(c) for c in choices]
    elif fmt == "boolq":
        if "passage" in m:
            passage, q = str(m["passage"]), str(m.get("question", ""))
        else:  # sources' record: meta.question = "{passage}\n\nQuestion: {Question}?"
            passage, _, q = _question(rec).rpartition("\n\nQuestion: ")
        q = q.strip().rstrip("?")
        q = q[:1].lower() + q[1:]  # BoolQ questions are lower case (the source capitalises them)
        ctx = (f"{passage.strip()}\n" if passage.strip() else "") + f"Question: {q}?\nAnswer:"
    else:  # arc, or a template-less custom task
        ctx = f"Question: {_question(rec).strip()}\nAnswer:"
    return ctx, [" " + c for c in choices], choices


def _question(rec: Record) -> str:
    return str(rec.meta.get("question") or rec.prompt_text())
