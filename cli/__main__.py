"""`python -m cli …` is `shopfloor …` (what `shopfloor up` starts its children with)."""

from cli.main import run

run()
