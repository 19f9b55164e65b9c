"""Errors that freqkit raises for bad input: one clear line naming the problem and the fix."""


class FreqkitError(ValueError):
    """A user-facing error; the CLI prints its message as one line, without a traceback."""


class ParameterError(FreqkitError):
    """A bad value of one named parameter; the CLI shows the parameter as its flag (``steps`` -> ``--steps``)."""

    def __init__(self, param: str, detail: str) -> None:
        self.param = param
        self.detail = detail
        super().__init__(f"{param} {detail}")
