"""Atomic, resumable file writing, and the one JSONL reader. Every stage writes through here: a reader never sees a
half-written file."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import UserError


# Errors of a write that has no room: the OSError a file object raises for them carries no file name.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def _named(e: BaseException, path: Path) -> BaseException:
    """A disk-full (or similar) OSError from writing `path`, with `path` as its file name (for the message)."""
    if isinstance(e, OSError) and e.filename is None and e.errno in _NO_ROOM:
        return OSError(e.errno, e.strerror or os.strerror(e.errno), str(path))
    return e


def output_dir_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be (or become) a writable output folder, or None when it can. Creates nothing: it looks
    at `path` or, when that does not exist yet, at its nearest existing ancestor."""
    p = Path(path).expanduser()
    cur = p
    while not cur.exists() and cur.parent != cur:
        cur = cur.parent
    if not cur.is_dir():
        return f"'{cur}' is a file, not a folder, so '{p}' cannot be created" if cur != p else \
            f"'{p}' is a file, not a folder"
    if not os.access(cur, os.W_OK | os.X_OK):
        return f"'{cur}' is not writable (permissions or a read-only file system)"
    return None


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Write to a temp file beside `path`, fsync, then rename over it. On error the target is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        named = _named(e, path)
        if named is not e:
            raise named from e
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (model weights, archives, adapters)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


class JsonlAppender:
    """Append-only JSONL log for resumable stages (`<final>.partial`).

    Each row is written whole and flushed, so a SIGKILL leaves at most one torn last line, which
    `read_complete_rows` drops on resume. `finish()` renames the partial file onto the final path.
    """

    def __init__(self, final_path: str | os.PathLike):
        self.final_path = Path(final_path)
        self.partial_path = self.final_path.with_name(self.final_path.name + ".partial")
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        self._f = None

    def existing(self) -> list[dict]:
        """Rows already written by an earlier, interrupted run (the torn tail, if any, is cut off)."""
        rows = read_complete_rows(self.partial_path)
        # Rewrite the file without the torn tail so appends start on a clean line.
        if self.partial_path.exists():
            with atomic_open(self.partial_path) as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        return rows

    def append(self, row: dict) -> None:
        try:
            if self._f is None:
                self._f = open(self.partial_path, "a", encoding="utf-8")
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._f.flush()
        except OSError as e:   # a torn last line is dropped on resume (read_complete_rows)
            named = _named(e, self.partial_path)
            if named is not e:
                raise named from e
            raise

    def close(self) -> None:
        if self._f is not None:
            f, self._f = self._f, None
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                named = _named(e, self.partial_path)
                if named is not e:
                    raise named from e
                raise
            finally:
                try:
                    f.close()
                except OSError:
                    pass

    def finish(self, rows_in_order: list[dict] | None = None) -> None:
        """Publish: write `rows_in_order` (or the partial file as is) atomically to the final path."""
        self.close()
        if rows_in_order is not None:
            write_jsonl(self.final_path, rows_in_order)
            if self.partial_path.exists():
                self.partial_path.unlink()
        else:
            os.replace(self.partial_path, self.final_path)


def jsonl_values(lines: Iterable[str], file: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line; malformed JSON is a UserError naming `file` and the line."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"malformed JSON ({e.msg} at column {e.colno})", file=file, line=lineno) from None


def iter_jsonl(path: str | os.PathLike, missing: str = "file not found") -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a UTF-8 JSONL file, read lazily (`jsonl_values`); a missing
    file is a UserError with the message `missing`."""
    path = Path(path)
    if not path.exists():
        raise UserError(missing, file=str(path))
    with open(path, encoding="utf-8") as f:
        yield from jsonl_values(f, str(path))


def read_complete_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of an append-only log (JsonlAppender, log.jsonl) up to the first torn or malformed line; [] when the
    file does not exist. Unlike `iter_jsonl`, a bad tail is not an error: it is what a kill leaves behind."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn last line from a kill
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows
