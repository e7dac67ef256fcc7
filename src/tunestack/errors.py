"""User-facing errors: raised for bad input, printed by the CLI as one line with the fix, no traceback."""


class TunestackError(Exception):
    """An error the user can fix. The message names the file, line or flag, what was expected and what to do."""


class ConfigError(TunestackError):
    """One or more bad flag values; the message lists every problem at once."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) if len(self.problems) > 1 else self.problems[0])


class DataError(TunestackError):
    """A dataset file or row that cannot be used."""


class ModelNotFoundError(TunestackError):
    """A model name that does not resolve to anything."""


class MissingExtraError(TunestackError):
    """An optional backend is not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(f"{purpose} needs {package}, which is not installed: pip install 'tunestack[{extra}]'")
