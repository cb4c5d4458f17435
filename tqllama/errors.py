"""The one exception type the CLI catches and prints as a single line."""


class TqError(Exception):
    """A user-facing failure: the message says what went wrong and what to do."""
