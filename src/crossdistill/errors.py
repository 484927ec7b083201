"""One exception type for bad input: the CLI turns it into one clear message and exit code 2."""
from __future__ import annotations

import difflib


class UserError(Exception):
    """Bad input from the user (file, recipe, name). Never a traceback: the CLI prints `str(err)` and exits 2.

    `where` names the file (and line / field when known), so the message always points at what to fix.
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        self.file, self.line, self.field = file, line, field
        self.message = message
        parts = []
        if file:
            parts.append(f"{file}" + (f", line {line}" if line is not None else ""))
        if field:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)

    def located(self, recipe: str | None, lines: dict[str, int] | None = None) -> "UserError":
        """This error pointed at the recipe it came from: a recipe-level error (one that names a field but no file)
        gets the recipe's path, and the field's line in it when `lines` ({key path: line}) has it."""
        if recipe is None or self.field is None or self.file not in (None, recipe) or self.line is not None:
            return self
        line = (lines or {}).get(self.field)
        if self.file == recipe and line is None:
            return self
        err = UserError(self.message, file=recipe, line=line, field=self.field)
        err.__cause__ = self.__cause__
        return err


def suggest(name: str, known, cutoff: float = 0.6, prefix: str = "") -> str:
    """The "did you mean" hint of every error about an unknown name: " (did you mean 'x'?)" for the closest of
    `known` (named as `prefix` + it, e.g. the key's section), or '' when none is close enough (or `name` itself is
    known)."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=cutoff)
    return f" (did you mean '{prefix}{close[0]}'?)" if close and close[0] != str(name) else ""
