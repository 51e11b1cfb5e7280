"""The one error type the command line turns into a clean message and exit status 2."""

from __future__ import annotations

import re

# Control characters and line separators (what str.splitlines breaks at, and more): a file's name or a
# value quoted in a message may hold any, and the command line prints an error as one line.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class UserError(Exception):
    """Bad input from the user: which file, which field, what is wrong, what would be right."""

    def __init__(self, where: str, field: str | None, message: str) -> None:
        self.where = where
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        field = f" field '{self.field}':" if self.field else ""
        return _UNPRINTABLE.sub(lambda m: repr(m[0])[1:-1], f"{self.where}:{field} {self.message}")
