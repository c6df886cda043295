"""The one exception type for user mistakes.

Anything a user can get wrong (an unknown preset, an impossible architecture, a corrupt
checkpoint, a missing dataset) raises ``LogahError`` with a message that names the offending
value. The CLI turns it into one line on stderr and exit status 2; internal invariants use
``assert`` instead, so a traceback always means a bug in this package.
"""


class LogahError(ValueError):
    """A user-facing error: bad input, missing data, or a checkpoint that does not fit.

    Its message is one line, whatever it quotes: a library's text with line breaks (SQLAlchemy's,
    torch's) has them joined with "; ", so the CLIs' one line on stderr holds all of it."""

    def __init__(self, message: str = ""):
        lines = [line.strip() for line in str(message).splitlines() if line.strip()]
        super().__init__("; ".join(lines))
