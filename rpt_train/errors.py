"""The one exception type for user-facing errors.

CLIs catch ``RptError`` and print its message as a single line (no traceback) before exiting non-zero;
anything else is a bug and keeps its traceback.
"""


class RptError(Exception):
    """A problem with the user's input, configuration or environment, explained in one line."""
