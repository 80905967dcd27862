"""Make a ``CONSOLE_USERS`` entry: ``python -m oncall.console.passwords NAME ROLE``.

Reads the password twice without echo (or once from standard input when it is not a terminal) and
prints ``NAME:ROLE:<Argon2id hash>`` (argon2-cffi's default parameters, RFC 9106 low-memory profile).
Join several entries with ``;`` in ``CONSOLE_USERS``.
"""

from __future__ import annotations

import argparse
import getpass
import sys

import argon2
from pydantic import ValidationError

from oncall.settings import ConsoleUser

MIN_PASSWORD_CHARS = 12


def hash_password(password: str, hasher: argon2.PasswordHasher | None = None) -> str:
    """The Argon2id PHC string of ``password`` (a fresh random salt each call).

    Raises ValueError for a password shorter than ``MIN_PASSWORD_CHARS`` characters.
    """
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"the password must be at least {MIN_PASSWORD_CHARS} characters")
    return (hasher or argon2.PasswordHasher()).hash(password)


def user_entry(name: str, role: str, password: str) -> str:
    """``name:role:hash`` for ``CONSOLE_USERS``; raises ValueError for an invalid name, role or password."""
    entry = f"{name}:{role}:{hash_password(password)}"
    try:
        ConsoleUser(name=name, role=role, password_hash=entry.split(":", 2)[2])
    except ValidationError as exc:
        raise ValueError("; ".join(f"{err['loc'][0]}: {err['msg']}" for err in exc.errors())) from None
    return entry


def read_password() -> str:
    """The password from the terminal (asked twice) or the first line of standard input."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def main(argv: list[str] | None = None) -> int:
    """Print a ``CONSOLE_USERS`` entry; exit 2 with the reason on invalid input."""
    parser = argparse.ArgumentParser(description="Make a CONSOLE_USERS entry (name:role:argon2-hash).")
    parser.add_argument("name", help="account name: letters, digits, . _ @ -")
    parser.add_argument("role", choices=["viewer", "responder"])
    args = parser.parse_args(argv)
    try:
        print(user_entry(args.name, args.role, read_password()))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
