"""The issue types a worker may report (ISSUE_TYPES), with the labels the mobile app and the operator view show."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI

# Turkish and English labels of the default types; a type added through ISSUE_TYPES without one here is labelled
# with its own code in both languages.
LABELS: dict[str, tuple[str, str]] = {
    "machine_breakdown": ("Makine arızası", "Machine breakdown"),
    "material_shortage": ("Malzeme eksikliği", "Material shortage"),
    "quality": ("Kalite sorunu", "Quality problem"),
    "safety": ("İş güvenliği", "Safety"),
    "other": ("Diğer", "Other"),
}


def labelled(codes: Sequence[str]) -> list[dict[str, Any]]:
    """Each configured type with its labels, in the configured order."""
    return [
        {"code": code, "labels": dict(zip(("tr", "en"), LABELS.get(code, (code, code)), strict=True))} for code in codes
    ]


def document_issue_types(app: FastAPI, codes: Sequence[str]) -> None:
    """Make the OpenAPI schema name the configured types as the enum of every `type` an issue is reported with,
    so clients generated from it offer exactly what the API accepts."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()
        schema = document.get("components", {}).get("schemas", {}).get("IssueCreate", {})
        if "type" in schema.get("properties", {}):
            schema["properties"]["type"]["enum"] = list(codes)
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema
