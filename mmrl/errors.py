"""Errors that mean "the user made a mistake": the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """A mistake in input, config or arguments; the message is one clear line, never a traceback."""
