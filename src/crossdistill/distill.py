"""The distill stage: seed rewrites -> domain verifiers (+ sandbox) -> fallback -> distilled.jsonl + stats.json.

    stats = distill(cfg)                    # OUTPUT_DIR/distill/{distilled.jsonl, stats.json}
    distill(cfg, shard="0/4"); ...; merge_shards(cfg)

For every training record of every recipe domain, the domain plug-in renders its rewrite prompt (the task plus the
reference response, in the model's chat template, with the domain's assistant prefill). Candidates come in rounds:
round 0 is the greedy rewrite of every record; round k = 1..n-1 (`distill.num_candidates` = n, or the domain's
own `domains.<d>.num_candidates`) samples candidate k at `distill.temperature` for the records that have no verified non-copy yet, seeded from (recipe seed, k) and the
prompt text, so a record's candidates do not depend on which records share its batch. Each round is one
continuously batched generation over all domains, each row with its own token budget and stop strings: the budget is
`domains.<d>.max_new_tokens` (else `distill.max_new_tokens`), the stops are the domain's natural end (`Domain.stop`). Every candidate (prefill +
generation) is verified by its domain; a record keeps its first verified non-copy, else its first verified copy,
else the original response with the greedy candidate's rejection reason. One output row per input record, in
recipe domain order then input order.

Resumable and safe to kill: each finished generation is appended to `distill/generations.jsonl.partial`, keyed by
a hash of its rendered prompt + model + that candidate's sampling settings, so a rerun regenerates only what is missing (a changed
record or setting regenerates only the rows it changes). The final files are written atomically at the end, and
a rerun whose inputs hash (records + distill config + model + template/verifier version) matches the finished
`stats.json` returns at once.

Output row fields: id, domain (the recipe's domain name), prompt, original_response, response (the training
target), accepted, copied, reason ("ok" when accepted), generated (the whole assistant text: prefill + generation),
n_tokens (all candidates), finished, details (the verifier's evidence), candidate (index of the kept candidate, or
null), candidates (each one's reason, copied, n_tokens, finished), target_differs (the target's token sequence is not
the reference's), plus the record's source/answer/tests/test_setup/entry_point/tools/expected_call/choices/gold/meta.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from .config import Config, stable_hash
from .domains import VerifyContext, get_domain
from .errors import UserError
from .io import JsonlAppender, read_complete_rows, write_json, write_jsonl
from .records import Record

# Bump when a template or verifier changes what the stage produces for the same inputs.
STAGE_VERSION = "distill-2"
RECORD_FIELDS = ("source", "answer", "tests", "test_setup", "entry_point", "tools", "expected_call", "choices",
                 "gold", "meta")
CHUNK_BATCHES = 4   # without generate_iter: generate this many batches per call, then checkpoint


# --- inputs --------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Item:
    index: int          # position in the whole (unsharded) input order
    domain: str         # the recipe's domain name
    plugin: str         # the domain plug-in
    record: Record


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    if shard is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not m or int(m.group(2)) < 1 or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise UserError(f"'{shard}' is not a shard i/n with 0 <= i < n (e.g. 0/4)", field="shard")
    return int(m.group(1)), int(m.group(2))


def _items(cfg: Config, records_by_domain: dict[str, list[Record]]) -> list[_Item]:
    """The records of the recipe's domains, in recipe domain order then input order."""
    items: list[_Item] = []
    for d in cfg.domains:
        plugin = cfg.domains[d].plugin or d
        get_domain(plugin)  # unknown plug-in: fail before any work
        items += [_Item(len(items) + i, d, plugin, r) for i, r in enumerate(records_by_domain.get(d, []))]
    return items


def _paths(cfg: Config, out_dir: str | None, shard: tuple[int, int] | None) -> Path:
    root = Path(out_dir or cfg.output_dir) / "distill"
    return root if shard is None else root / "shards" / f"{shard[0]}-of-{shard[1]}"


def _inputs_hash(all_hash: str, shard: tuple[int, int] | None) -> str:
    return stable_hash({"all": all_hash, "shard": list(shard) if shard else None})


def _cached(work: Path, inputs_hash: str, n_rows: int) -> dict | None:
    stats_path, out_path = work / "stats.json", work / "distilled.jsonl"
    if not (stats_path.exists() and out_path.exists()):
        return None
    try:
        st = json.loads(stats_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if st.get("inputs_hash") != inputs_hash or not st.get("complete"):
        return None
    if len(read_complete_rows(out_path)) != n_rows:
        return None
    return st


# --- rows and stats --------------------------------------------------------------------------------

def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, ensure_ascii=False, default=str))


def _row(item: _Item, *, response: str, accepted: bool, copied: bool, reason: str, generated: str | None,
         n_tokens: int, finished: bool | None, details: dict | None = None) -> dict:
    r = item.record
    row = {"id": r.id, "domain": item.domain, "prompt": r.prompt, "original_response": r.response,
           "response": response, "accepted": accepted, "copied": copied, "reason": reason,
           "generated": generated, "n_tokens": n_tokens, "finished": finished}
    if details:
        row["details"] = _jsonable(details)
    for f in RECORD_FIELDS:
        v = getattr(r, f)
        if v is not None and v != {}:
            row[f] = v
    return row


def compute_stats(rows: list[dict], timing: dict[str, dict] | None = None) -> dict:
    """Per-domain and total statistics of distilled rows.

    `timing[domain]` = {"generation_s", "verify_s", "new_tokens"} of the run(s) that produced them. Generation runs
    as one batch across domains, so a domain's generation time is the batch time apportioned by the tokens it
    generated; `wall_s` = that share + the domain's own verification time; `tokens_per_s` = new tokens / share.
    """
    timing = timing or {}
    doms: dict[str, dict] = {}
    for row in rows:
        d = doms.setdefault(row["domain"], {"records": 0, "accepted": 0, "copied": 0, "reasons": {},
                                             "tokens_generated": 0, "candidates": 0, "candidate_reasons": {},
                                             "targets_differ": 0})
        d["records"] += 1
        d["tokens_generated"] += int(row.get("n_tokens") or 0)
        d["targets_differ"] += bool(row.get("target_differs"))
        for c in row.get("candidates") or []:
            d["candidates"] += 1
            why = "copy" if c["reason"] == "ok" and c["copied"] else c["reason"]
            d["candidate_reasons"][why] = d["candidate_reasons"].get(why, 0) + 1
        if row["accepted"]:
            d["accepted"] += 1
            d["copied"] += bool(row["copied"])
        else:
            d["reasons"][row["reason"]] = d["reasons"].get(row["reason"], 0) + 1

    def finish(d: dict, t: dict) -> dict:
        n = d["records"]
        d["accepted_not_copied"] = d["accepted"] - d["copied"]
        d["acceptance_rate"] = round(d["accepted"] / n, 4) if n else 0.0
        d["self_distilled_rate"] = round(d["accepted_not_copied"] / n, 4) if n else 0.0
        d["reasons"] = dict(sorted(d["reasons"].items(), key=lambda kv: (-kv[1], kv[0])))
        d["candidate_reasons"] = dict(sorted(d["candidate_reasons"].items(), key=lambda kv: (-kv[1], kv[0])))
        gen_s, ver_s, new = t.get("generation_s", 0.0), t.get("verify_s", 0.0), t.get("new_tokens", 0)
        d["generation_s"], d["verify_s"], d["new_tokens"] = round(gen_s, 3), round(ver_s, 3), new
        d["wall_s"] = round(gen_s + ver_s, 3)
        d["tokens_per_s"] = round(new / gen_s, 2) if gen_s > 0 else None
        return d

    out = {name: finish(d, timing.get(name, {})) for name, d in doms.items()}
    tot = {"records": 0, "accepted": 0, "copied": 0, "reasons": {}, "tokens_generated": 0, "candidates": 0,
           "candidate_reasons": {}, "targets_differ": 0}
    tt = {"generation_s": 0.0, "verify_s": 0.0, "new_tokens": 0}
    for name, d in out.items():
        for k in ("records", "accepted", "copied", "tokens_generated", "candidates", "targets_differ"):
            tot[k] += d[k]
        for field in ("reasons", "candidate_reasons"):
            for k, v in d[field].items():
                tot[field][k] = tot[field].get(k, 0) + v
        for k in tt:
            tt[k] += timing.get(name, {}).get(k, 0)
    return {"domains": out, "totals": finish(tot, tt)}


def _timing(items: list[_Item], new_tokens: dict[int, int], gen_s: float, verify_s: dict[str, float]) -> dict:
    per: dict[str, dict] = {}
    total_new = sum(new_tokens.values())
    for it in items:
        t = per.setdefault(it.domain, {"generation_s": 0.0, "verify_s": verify_s.get(it.domain, 0.0), "new_tokens": 0})
        t["new_tokens"] += new_tokens.get(it.index, 0)
    for t in per.values():
        t["generation_s"] = gen_s * t["new_tokens"] / total_new if total_new else 0.0
    return per


def _publish(work: Path, rows: list[dict], stats: dict) -> None:
    write_jsonl(work / "distilled.jsonl", rows)
    write_json(work / "stats.json", stats)   # last: its presence + hash marks the stage complete


# --- the stage -----------------------------------------------------------------------------------

def distill(cfg: Config, out_dir: str | None = None, *, records_by_domain: dict[str, list[Record]] | None = None,
            model: Any = None, tokenizer: Any = None, shard: str | None = None, progress: bool = True) -> dict:
    """Run the distill stage (see the module docstring); returns the stats written to stats.json.

    `records_by_domain` (default: what the data stage wrote, `data.read_train_data`), `model` + `tokenizer` (default: loaded from
    `cfg.model`; a model passed in must be `cfg.model`, whose name the cache keys record) and `out_dir` (default
    `cfg.output_dir`) are for tests and callers that already hold them. `shard="i/n"` processes the records whose
    position in the input order is i mod n, into distill/shards/i-of-n/ (combine with `merge_shards`)."""
    t_start = time.perf_counter()
    sh = parse_shard(shard)
    work = _paths(cfg, out_dir, sh)
    if records_by_domain is None:
        from .data import read_train_data

        records_by_domain = read_train_data(cfg, out_dir)
    items = _items(cfg, records_by_domain)
    model_name = cfg.model   # a model passed in must be this one: its name is what the cache keys record
    key = {"version": STAGE_VERSION, "model": model_name, "seed": cfg.seed, "distill": dataclasses.asdict(cfg.distill),
           "records": [[it.domain, it.plugin, it.record.to_dict()] for it in items]}
    # a domain's own budget / candidate count (only when set, so recipes without them keep their keys)
    per_domain = {d: {"max_new_tokens": c.max_new_tokens, "num_candidates": c.num_candidates}
                  for d, c in cfg.domains.items() if c.max_new_tokens is not None or c.num_candidates is not None}
    if per_domain:
        key["domains"] = per_domain
    all_hash = stable_hash(key)
    inputs_hash = _inputs_hash(all_hash, sh)
    mine = [it for it in items if sh is None or it.index % sh[1] == sh[0]]
    cached = _cached(work, inputs_hash, len(mine))
    if cached is not None:
        if progress:
            print(f"distill: {work / 'distilled.jsonl'} is up to date", file=sys.stderr)
        return cached

    header = {"model": model_name, "inputs_hash": inputs_hash, "all_inputs_hash": all_hash, "version": STAGE_VERSION,
              "shard": list(sh) if sh else None, "distill": dataclasses.asdict(cfg.distill), "complete": True}
    if not cfg.distill.enabled:
        rows = [_row(it, response=it.record.response, accepted=False, copied=False, reason="disabled",
                     generated=None, n_tokens=0, finished=None) for it in mine]
        stats = {**header, **compute_stats(rows), "wall_s": round(time.perf_counter() - t_start, 3)}
        _publish(work, rows, stats)
        return stats

    # 1. render every rewrite prompt
    from .generation import render_chat

    if tokenizer is None:
        if model is not None:
            raise UserError("distill() got a model but no tokenizer; pass both (or neither)", field="tokenizer")
        from .models import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
    dc = cfg.distill
    prompts: dict[int, str] = {}
    prefills: dict[int, str] = {}
    for it in mine:
        messages, prefill = get_domain(it.plugin).rewrite_messages(it.record)
        prompts[it.index] = render_chat(tokenizer, messages, prefill=prefill)
        prefills[it.index] = prefill

    # 2. candidate rounds: round 0 is the greedy rewrite of every record; round k >= 1 samples candidate k for the
    # records that have no accepted non-copy yet. Each round generates what no earlier run has generated, then is
    # verified per domain (code runs in parallel in the sandbox).
    log = JsonlAppender(work / "generations.jsonl")
    done: dict[str, dict] = {}
    for row in read_complete_rows(work / "generations.jsonl") + log.existing():
        done[row.get("key")] = row
    cands: dict[int, list[tuple[str, Any]]] = {it.index: [] for it in mine}   # (generation key, VerifyResult)
    new_tokens: dict[int, int] = {}
    gen_s = 0.0
    verify_s: dict[str, float] = {}
    n_generated = 0
    try:
        n_of = {d: cfg.domains[d].num_candidates or dc.num_candidates for d in {it.domain for it in mine}}
        for k in range(max(n_of.values(), default=1)):
            todo = [it for it in mine if k < n_of[it.domain]
                    and not any(r.accepted and not r.copied for _, r in cands[it.index])]
            if not todo:
                break
            keys = {it.index: _candidate_key(cfg, it, prompts[it.index], k) for it in todo}
            pending, seen_keys = [], set()
            for it in todo:   # identical prompts share one generation (and one seed)
                if keys[it.index] not in done and keys[it.index] not in seen_keys:
                    seen_keys.add(keys[it.index])
                    pending.append(it)
            if pending and model is None:
                if dc.backend == "vllm":
                    from .models import resolve_model_path

                    from .vllm_backend import VllmModel

                    # vLLM loads the weights itself, with the recipe's `vllm` engine settings
                    model = VllmModel(resolve_model_path(cfg.model), None, cfg.vllm)
                else:
                    from .models import load_model

                    model, _tok = load_model(cfg.model, dtype=dc.dtype)
            if pending:   # one generation run for the round: every domain's rows, each with its own settings
                samplings = {it.index: _sampling(cfg, _sampling_args(cfg, it, k)) for it in pending}
                gen_s += _generate(model, tokenizer, pending, prompts, keys, samplings, dc.backend, log,
                                   done, new_tokens, progress, k)
                n_generated += len(pending)
            for dname, its in _by_domain(todo).items():
                t0 = time.perf_counter()
                dom = get_domain(its[0].plugin)
                ctx = VerifyContext.from_distill_config(dc, progress=f"verify {dname}" if progress else None)
                gens = [(prefills[it.index] + (done[keys[it.index]].get("text") or ""),
                         bool(done[keys[it.index]].get("finished"))) for it in its]
                for it, res in zip(its, dom.verify_many([it.record for it in its], gens, ctx), strict=True):
                    cands[it.index].append((keys[it.index], res))
                verify_s[dname] = verify_s.get(dname, 0.0) + time.perf_counter() - t0
    finally:
        log.close()   # everything generated so far is on disk for the next run

    rows = [_choose(it, cands[it.index], done, prefills[it.index], tokenizer) for it in mine]
    stats = {**header, **compute_stats(rows, _timing(mine, new_tokens, gen_s, verify_s)),
             "generated_now": n_generated,
             "reused_generations": sum(len(c) for c in cands.values()) - n_generated,
             "wall_s": round(time.perf_counter() - t_start, 3)}
    log.finish([{**done[key], "id": it.record.id, "domain": it.domain} for it in mine for key, _ in cands[it.index]])
    _publish(work, rows, stats)
    if progress:
        _print_summary(stats, work)
    return stats


def _by_domain(items: list[_Item]) -> dict[str, list[_Item]]:
    out: dict[str, list[_Item]] = {}
    for it in items:
        out.setdefault(it.domain, []).append(it)
    return out


def _sampling_args(cfg: Config, it: _Item, k: int) -> tuple:
    """(max_new_tokens, stop strings, temperature, seed) of candidate k of a record.

    When neither `distill.num_candidates` nor the domain's own n is above 1, the one candidate is sampled as
    `distill.temperature` says (0 = greedy); otherwise candidate 0 is greedy and candidate k >= 1 is sampled at
    `distill.temperature` with a seed derived from (recipe seed, k). The
    generator seeds every row from (that seed, the prompt text), so a record's candidate k is the same whichever
    other records share its batch."""
    dc = cfg.distill
    budget = cfg.domains[it.domain].max_new_tokens or dc.max_new_tokens
    stop = tuple(get_domain(it.plugin).stop)
    if max(dc.num_candidates, cfg.domains[it.domain].num_candidates or 1) == 1:
        return budget, stop, dc.temperature, cfg.seed
    if k == 0:
        return budget, stop, 0.0, cfg.seed
    return budget, stop, dc.temperature, int(stable_hash({"seed": cfg.seed, "candidate": k}, n=15), 16)


def _sampling(cfg: Config, args: tuple):
    from .generation import SamplingConfig

    budget, stop, temperature, seed = args
    dc = cfg.distill
    return SamplingConfig(max_new_tokens=budget, temperature=temperature, top_p=dc.top_p, top_k=dc.top_k,
                          batch_size=dc.batch_size, seed=seed, stop=list(stop))


def _candidate_key(cfg: Config, it: _Item, prompt: str, k: int) -> str:
    """Cache key of candidate k: the rendered prompt and every setting its tokens depend on (a greedy candidate's
    key leaves out the sampling knobs, so changing n or the temperature reuses the greedy rewrites)."""
    budget, stop, temperature, seed = _sampling_args(cfg, it, k)
    dc = cfg.distill
    settings: dict[str, Any] = {"model": cfg.model, "max_new_tokens": budget, "stop": list(stop),
                                "backend": dc.backend, "dtype": dc.dtype, "temperature": temperature}
    if temperature > 0:
        settings.update(top_p=dc.top_p, top_k=dc.top_k, seed=seed)
    return stable_hash({"prompt": prompt, **settings}, n=24)


def _token_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text or "", add_special_tokens=False)["input_ids"])


def _choose(it: _Item, cands: list[tuple[str, Any]], done: dict[str, dict], prefill: str, tokenizer) -> dict:
    """The output row of a record: its first accepted non-copy candidate, else its first accepted copy, else the
    original response with the greedy candidate's rejection reason. `candidates` lists every candidate's verdict."""
    pick = next((j for j, (_, r) in enumerate(cands) if r.accepted and not r.copied), None)
    if pick is None:
        pick = next((j for j, (_, r) in enumerate(cands) if r.accepted), 0)
    key, res = cands[pick]
    g = done[key]
    response = res.target if res.accepted else it.record.response
    row = _row(it, response=response, accepted=res.accepted, copied=res.copied, reason=res.reason,
               generated=prefill + (g.get("text") or ""), n_tokens=sum(int(done[c].get("n_tokens") or 0)
                                                                       for c, _ in cands),
               finished=bool(g.get("finished")), details=res.details)
    row["candidate"] = pick if res.accepted else None
    row["candidates"] = [{"reason": r.reason, "copied": r.copied, "n_tokens": int(done[c].get("n_tokens") or 0),
                          "finished": bool(done[c].get("finished"))} for c, r in cands]
    row["target_differs"] = bool(res.accepted) and _token_ids(tokenizer, response) != _token_ids(
        tokenizer, it.record.response)
    return row


def _generate(model, tokenizer, pending: list[_Item], prompts: dict[int, str], keys: dict[int, str],
              samplings: dict[int, Any], backend: str, log: JsonlAppender, done: dict[str, dict],
              new_tokens: dict[int, int], progress: bool, candidate: int = 0) -> float:
    """Generate the pending rewrites longest prompt first, each with its own sampling settings (budget, stops,
    temperature, seed: one continuously batched run however many domains take part), appending each to the log as it
    completes."""
    from . import generation

    lengths = {it.index: len(tokenizer(prompts[it.index], add_special_tokens=False)["input_ids"]) for it in pending}
    order = sorted(pending, key=lambda it: (-lengths[it.index], it.index))
    label = (f"distill: rewriting (candidate {candidate + 1})" if candidate else "distill: rewriting") \
        if progress else None
    t0 = time.perf_counter()

    def record(it: _Item, g) -> None:
        row = {"key": keys[it.index], "id": it.record.id, "domain": it.domain, "candidate": candidate,
               "text": g.text, "n_tokens": int(g.n_tokens), "finished": bool(g.finished)}
        log.append(row)
        done[row["key"]] = row
        new_tokens[it.index] = new_tokens.get(it.index, 0) + int(g.n_tokens)

    texts = [prompts[it.index] for it in order]
    cfgs = [samplings[it.index] for it in order]
    if hasattr(generation, "generate_iter"):
        for j, g in generation.generate_iter(model, tokenizer, texts, cfgs, progress=label, backend=backend):
            record(order[j], g)
    else:
        step = max(1, cfgs[0].batch_size * CHUNK_BATCHES)
        for s in range(0, len(order), step):
            gens = generation.generate(model, tokenizer, texts[s:s + step], cfgs[s:s + step], progress=label,
                                       backend=backend)
            for it, g in zip(order[s:s + step], gens, strict=True):
                record(it, g)
    return time.perf_counter() - t0


def _print_summary(stats: dict, work: Path) -> None:
    for name, d in stats["domains"].items():
        top = ", ".join(f"{k} {v}" for k, v in list(d["reasons"].items())[:4])
        print(f"distill {name:8} self-distilled {d['accepted_not_copied']}/{d['records']}, accepted "
              f"{d['accepted']} (copied {d['copied']}) from {d['candidates']} candidates; rejected: {top or '-'}",
              file=sys.stderr)
    print(f"distill: wrote {work / 'distilled.jsonl'}", file=sys.stderr)


# --- shards --------------------------------------------------------------------------------------

def merge_shards(cfg: Config, out_dir: str | None = None) -> dict:
    """Combine finished `distill --shard i/n` outputs into distill/distilled.jsonl + stats.json (input order)."""
    root = _paths(cfg, out_dir, None)
    found: dict[int, dict[int, Path]] = {}
    for p in sorted((root / "shards").glob("*-of-*")):
        m = re.fullmatch(r"(\d+)-of-(\d+)", p.name)
        if m and (p / "stats.json").exists():
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = p
    if not found:
        raise UserError("no finished shards to merge (run `crossdistill distill RECIPE --shard i/n` first)",
                        file=str(root / "shards"))
    if len(found) > 1:
        raise UserError(f"shards of different counts n={sorted(found)} under one output dir; remove the stale ones",
                        file=str(root / "shards"))
    (n, parts), = found.items()
    missing = [i for i in range(n) if i not in parts]
    if missing:
        raise UserError(f"shards {', '.join(f'{i}/{n}' for i in missing)} are not finished", file=str(root / "shards"))
    shard_rows, shard_stats = [], []
    for i in range(n):
        st = json.loads((parts[i] / "stats.json").read_text(encoding="utf-8"))
        if not st.get("complete"):
            raise UserError(f"shard {i}/{n} is not complete", file=str(parts[i]))
        shard_stats.append(st)
        shard_rows.append(read_complete_rows(parts[i] / "distilled.jsonl"))
    hashes = {st["all_inputs_hash"] for st in shard_stats}
    if len(hashes) != 1:
        raise UserError("the shards were made from different inputs or settings; rerun them with the same recipe",
                        file=str(root / "shards"))
    total = sum(len(r) for r in shard_rows)
    rows = []
    for g in range(total):   # shard i holds global positions i, i+n, i+2n, ...
        part = shard_rows[g % n]
        if g // n >= len(part):
            raise UserError(f"shard {g % n}/{n} has too few rows", file=str(parts[g % n]))
        rows.append(part[g // n])
    timing: dict[str, dict] = {}
    for st in shard_stats:
        for name, d in st["domains"].items():
            t = timing.setdefault(name, {"generation_s": 0.0, "verify_s": 0.0, "new_tokens": 0})
            t["generation_s"] += d.get("generation_s", 0.0)
            t["verify_s"] += d.get("verify_s", 0.0)
            t["new_tokens"] += d.get("new_tokens", 0)
    all_hash = hashes.pop()
    first = shard_stats[0]
    stats = {"model": first["model"], "inputs_hash": _inputs_hash(all_hash, None), "all_inputs_hash": all_hash,
             "version": first["version"], "shard": None, "merged_shards": n, "distill": first["distill"],
             "complete": True, **compute_stats(rows, timing),
             "wall_s": round(sum(st.get("wall_s", 0.0) for st in shard_stats), 3)}
    _publish(root, rows, stats)
    return stats
