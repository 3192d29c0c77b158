"""The one exception type for user-facing errors, and the one way to warn.

CLIs catch ``RptError`` and print its message as a single line (no traceback) before exiting non-zero;
anything else is a bug and keeps its traceback. ``warn`` prints ``warning: ...`` on stderr, also under
``--quiet`` (a warning is not progress): something the user should know that does not stop the command.
``first_line`` is how an underlying exception is quoted inside such a one-line message.
"""

import sys


class RptError(Exception):
    """A problem with the user's input, configuration or environment, explained in one line."""


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def first_line(exc: BaseException) -> str:
    """An exception's first message line (its type name when it has no message)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
