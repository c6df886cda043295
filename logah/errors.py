"""The one exception type for user mistakes.

Anything a user can get wrong (an unknown preset, an impossible architecture, a corrupt
checkpoint, a missing dataset) raises ``LogahError`` with a message that names the offending
value. The CLI turns it into one line on stderr and exit status 2; internal invariants use
``assert`` instead, so a traceback always means a bug in this package.

Where a library's exception is the reason, the message quotes it and the raise hides its
traceback (``raise LogahError(...) from None``): a user needs the line, not the library's stack.
A developer who does need it sets ``LOGAH_DEBUG=1``: the CLIs then print the whole traceback,
the hidden cause included, before the line (``print_error``).
"""

import os
import sys
import traceback

DEBUG_VARIABLE = "LOGAH_DEBUG"


class LogahError(ValueError):
    """A user-facing error: bad input, missing data, or a checkpoint that does not fit.

    Its message is one line, whatever it quotes: a library's text with line breaks (SQLAlchemy's,
    torch's) has them joined with "; ", so the CLIs' one line on stderr holds all of it."""

    def __init__(self, message: str = ""):
        lines = [line.strip() for line in str(message).splitlines() if line.strip()]
        super().__init__("; ".join(lines))


def print_error(prefix: str, err: BaseException, message: str | None = None) -> None:
    """``PREFIX: error: MESSAGE`` (default: ``err``'s own) on stderr; with ``LOGAH_DEBUG`` set (not empty or 0), first
    the traceback of ``err`` and of every exception it was raised from or while handling,
    including the ones ``from None`` hid."""
    if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
        seen, link = set(), err
        while link is not None and id(link) not in seen:
            seen.add(id(link))
            link.__suppress_context__ = False
            link = link.__cause__ or link.__context__
        traceback.print_exception(err, file=sys.stderr)
    print(f"{prefix}: error: {err if message is None else message}", file=sys.stderr)
