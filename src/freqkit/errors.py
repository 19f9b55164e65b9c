"""Errors that freqkit raises for bad input: one clear line naming the problem and the fix."""


class FreqkitError(ValueError):
    """A user-facing error; the CLI prints its message as one line, without a traceback."""
