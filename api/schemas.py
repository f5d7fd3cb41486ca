"""The bases of the API's bodies: requests refuse unknown fields and NUL characters; responses read objects."""

from __future__ import annotations

from typing import Any, Self

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


class ReadModel(BaseModel):
    """A response body built from an object's attributes (an ORM row), plus the fields the object does not carry."""

    @classmethod
    def from_object(cls, source: object, **extra: Any) -> Self:
        """Each field from `extra` when given there, else from the attribute of `source` with the same name."""
        return cls.model_validate(
            {name: extra[name] if name in extra else getattr(source, name) for name in cls.model_fields}
        )


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
