"""Problems found in a policy: what the API server refuses (errors) and what it
accepts but almost certainly not as the author meant (warnings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    severity: str  # ERROR or WARNING
    code: str  # stable identifier, e.g. "unknown-resource"
    message: str
    field: str = ""  # "rules[2].resources[0].resources[1]"; "" for the whole file
    line: int | None = None
    column: int | None = None
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "field": self.field,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "hint": self.hint or None,
        }

    def sort_key(self) -> tuple[int, int, int, str]:
        return (
            0 if self.severity == ERROR else 1,
            self.line if self.line is not None else 0,
            self.column if self.column is not None else 0,
            self.code,
        )
