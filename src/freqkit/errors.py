"""Errors that freqkit raises for bad input: one clear line naming the problem and the fix."""


class FreqkitError(ValueError):
    """A user-facing error; the CLI prints its message as one line, without a traceback."""


class ParameterError(FreqkitError):
    """A bad value of one named parameter; the CLI shows the parameter as its flag (``steps`` -> ``--steps``)."""

    def __init__(self, param: str, detail: str) -> None:
        self.param = param
        self.detail = detail
        super().__init__(f"{param} {detail}")


def one_line(err: FreqkitError) -> FreqkitError:
    """A FreqkitError re-raised by a DataLoader worker carries the worker's traceback: the same error with its last line."""
    text = str(err)
    if "\n" not in text:
        return err
    last = text.strip().splitlines()[-1]
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return type(err)(last[len(prefix) :] if last.startswith(prefix) else last)
