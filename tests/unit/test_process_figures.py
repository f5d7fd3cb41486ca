"""What an API worker copies into the workers' shared metrics (api.prometheus.ProcessFigures): its hashing count as a
counter that grows by what was verified since the last copy, whatever the copy interval."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import CollectorRegistry

from api.prometheus import ProcessFigures


def test_verifications_are_copied_as_what_was_added_since_the_last_copy() -> None:
    registry = CollectorRegistry()
    hasher = SimpleNamespace(verifications=0)
    figures = ProcessFigures("unused", registry, None, cast(Any, hasher))

    def exported() -> float | None:
        return registry.get_sample_value("shopfloor_api_password_verifications_total")

    figures.copy()
    assert exported() == 0
    hasher.verifications = 3
    figures.copy()
    figures.copy()  # nothing new: nothing added
    assert exported() == 3
    hasher.verifications = 5
    figures.copy()
    assert exported() == 5
