"""The base of every request body: unknown fields refused, and no NUL characters in any text."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


def reject_nul(value: str) -> str:
    """For query parameters: PostgreSQL text cannot hold NUL, so it is a validation error, not a 500."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    return value


class InputModel(BaseModel):
    """A request body."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL: refuse it as a field error instead of failing in the database.
        if _has_nul(value):
            raise ValueError("text must not contain NUL characters")
        return value
