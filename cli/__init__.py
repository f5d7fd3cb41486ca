"""The `shopfloor` command: the only package that may import every process, each lazily in its subcommand.

`cli.main` parses the command line and dispatches; each subcommand lives in its own module (`processes`,
`admin`, `seed`, `transfer`, `up` with its `supervisor`).
"""
