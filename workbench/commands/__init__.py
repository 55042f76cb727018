"""Subcommands of the `workbench` CLI: each module defines `register(app)`.

Shared conventions live in `workbench.commands._shared`: `--model` defaults to the embedded model,
and bad input ends with one line on stderr and exit status 2.

Start-up: at module level a command module imports only typer and light modules (no torch,
transformers, transformer_lens or pandas); each command function imports the layers it runs when it
is called. That is the one reason for imports inside functions here: parsing, `workbench --help`
and every subcommand's `--help` stay well under a second, and bad options fail before the model
loads (`tests/test_cli_startup.py` checks that parsing and help import no torch).
"""
