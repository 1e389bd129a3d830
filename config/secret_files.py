"""Secrets read from files (or, for the webhook secrets, the environment), failing closed.

A secret that is configured but cannot be used (a file that is missing, unreadable, empty
or too short) stops the process that needs it with one line naming the variable, never
the secret: starting with an empty key would let anyone authenticate.
"""

from __future__ import annotations

from pathlib import Path

from projections.errors import UsageError

# A secret shorter than this is refused: it could be guessed, or be a file cut short.
MIN_SECRET_CHARS = 16


class SecretError(UsageError):
    """A configured secret cannot be used: the process must not start with it."""


def read_secret_file(where: str, path: str, min_chars: int = MIN_SECRET_CHARS) -> str:
    """The stripped text of ``path``; ``where`` names the setting in the error."""
    try:
        secret = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{where}: cannot read it ({exc.__class__.__name__})") from None
    return checked(where, secret, min_chars)


def checked(where: str, secret: str, min_chars: int = MIN_SECRET_CHARS) -> str:
    if len(secret) < min_chars:
        raise SecretError(
            f"{where}: the secret is {len(secret)} characters long; use at least {min_chars}"
        )
    return secret
