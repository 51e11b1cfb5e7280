"""The one error type the command line turns into a clean message and exit status 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: which file, which field, what is wrong, what would be right."""

    def __init__(self, where: str, field: str | None, message: str) -> None:
        self.where = where
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        field = f" field '{self.field}':" if self.field else ""
        return f"{self.where}:{field} {self.message}"
