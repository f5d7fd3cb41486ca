"""How a subcommand fails: one line the user can act on, and the exit status."""

EXIT_USAGE = 2


class CommandError(Exception):
    """A one-line failure the user can act on; printed without a traceback, exit status 1."""
