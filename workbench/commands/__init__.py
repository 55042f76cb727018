"""Subcommands of the `workbench` CLI: each module defines `register(app)`.

Shared conventions live in `workbench.commands._shared`: `--model` defaults to the embedded model,
and bad input ends with one line on stderr and exit status 2.
"""
