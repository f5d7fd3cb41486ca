"""Device sources: one module per protocol, each yielding tag values (see `base.py`)."""
