"""One exception type for bad input: the CLI turns it into one clear message and exit code 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (file, recipe, name). Never a traceback: the CLI prints `str(err)` and exits 2.

    `where` names the file (and line / field when known), so the message always points at what to fix.
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        self.file, self.line, self.field = file, line, field
        parts = []
        if file:
            parts.append(f"{file}" + (f", line {line}" if line is not None else ""))
        if field:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
