"""Exceptions for problems with what the user gave us (files, values, model names).

The CLI prints their message as one line and exits with status 2; library callers can catch
`InputError` to tell bad input from bugs.
"""


class InputError(ValueError):
    """Bad input: the message names the file, record, field or value that is wrong."""


class ModelLoadError(InputError):
    """A model could not be loaded; the message says which and what to do instead."""
