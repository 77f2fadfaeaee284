"""The one exception type that reaches the user as a single line."""

from __future__ import annotations


class InputError(Exception):
    """A problem with the user's input or environment: printed as one line, exit status 2.

    The message names the file, what is wrong with it and what to do.
    """
