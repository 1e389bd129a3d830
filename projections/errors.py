"""The one base of every error a user can fix, and how the CLI says it.

``salespulse`` catches ``SalespulseError`` in one place (``streams.cli.main``): it prints
each of ``lines()`` after ``salespulse: error:`` on stderr and exits with ``exit_code``;
a user never sees a traceback for one. Anything else that escapes is a bug. Pure: every
layer may raise these.
"""

from __future__ import annotations

EXIT_FAILED = 1  # the command could not do its work (a server away, a port taken...)
EXIT_USAGE = 2  # what it was given is wrong: an argument, a setting, a file


class SalespulseError(Exception):
    """Something went wrong that the user can act on, said in one line."""

    exit_code = EXIT_FAILED

    def lines(self) -> list[str]:
        return [str(self)]


class UsageError(SalespulseError):
    """An argument, a setting or a file the user gave is wrong."""

    exit_code = EXIT_USAGE


class ProblemsError(UsageError):
    """A file with problems: one line per problem, each naming the file once it is known."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.source = source

    def lines(self) -> list[str]:
        return [f"{self.source}: {p}" if self.source else p for p in self.problems]

    def about(self, source: object) -> ProblemsError:
        """The same problems, said of a file (``raise exc.about(path)``)."""
        self.source = str(source)
        return self


def described(exc: BaseException) -> str:
    """An exception as a log line should say it: its class and its message. ``%r`` is not
    enough: redis-py 8 shows its errors as ``server:ClusterError``, without the message."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
