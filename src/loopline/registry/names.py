"""Registry errors and name rules: one spelling per model name and per alias.

A model name is URL-decoded (until stable, so `%2F` and `%252F` both decode), NFKC-normalised
(fullwidth letters become ASCII ones) and trimmed; what remains must be ASCII letters, digits,
`.`, `_` and `-`, so slashes (however encoded), `@`, inner whitespace, zero-width characters
and look-alike letters from other scripts are refused. The casefolded result is the name's key:
`models.name_key` is unique, so `Churn`, `churn`, `%63hurn` and its fullwidth spelling are one
model. Aliases follow the same steps and are stored in their key form.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

MAX_NAME_LENGTH = 100
MAX_ALIAS_LENGTH = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]*$")
_DECODE_ROUNDS = 4
# `NAME@latest` means the newest version in every interface, so no alias may take that name.
RESERVED_ALIASES = frozenset({"latest"})


class RegistryError(ValueError):
    """A registry request names something that does not exist or breaks a rule."""


class InvalidName(RegistryError):
    """A model or alias name breaks the naming rules."""


class AliasConflict(RegistryError):
    """The alias moved since the caller read it (compare-and-swap lost)."""


class VersionArchived(RegistryError):
    """The version is archived: it cannot take an alias until it is unarchived."""


def _decode(raw: object, what: str) -> str:
    if not isinstance(raw, str):
        raise InvalidName(f"{what} must be a string, got {type(raw).__name__}")
    text = raw
    for _ in range(_DECODE_ROUNDS):
        try:
            decoded = unquote(text, errors="strict")
        except UnicodeDecodeError as exc:
            raise InvalidName(f"{what} {raw!r} has a %-escape that is not UTF-8") from exc
        if decoded == text:
            break
        text = decoded
    else:
        raise InvalidName(f"{what} {raw!r} is percent-encoded too many times")
    return unicodedata.normalize("NFKC", text).strip()


def _key(text: str) -> str:
    return unicodedata.normalize("NFKC", text.casefold())


def normalise_model_name(raw: str) -> tuple[str, str]:
    """The display form and the unique key of a model name.

    Returns:
        (display, key): display keeps the given case; key is its casefolded form.

    Raises:
        InvalidName: empty, too long, a slash (also `%2F`), or a character outside the rule.
    """
    display = _decode(raw, "model name")
    if not display:
        raise InvalidName(f"model name {raw!r} is empty")
    if "/" in display or "\\" in display:
        raise InvalidName(
            f"model name {raw!r} contains a slash (also when URL-encoded as %2F); "
            "use '-', '_' or '.' instead"
        )
    if len(display) > MAX_NAME_LENGTH:
        raise InvalidName(f"model name {raw!r} is longer than {MAX_NAME_LENGTH} characters")
    if not _NAME.match(display):
        raise InvalidName(
            f"model name {raw!r}: use ASCII letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return display, _key(display)


def model_name_key(raw: str) -> str:
    """The unique key of a model name (see `normalise_model_name`)."""
    return normalise_model_name(raw)[1]


def normalise_alias(raw: str) -> str:
    """The stored form of an alias name (`Champion`, ` champion ` -> `champion`).

    Raises:
        InvalidName: empty, too long, reserved, or a character outside the rule.
    """
    alias = _key(_decode(raw, "alias"))
    if not alias:
        raise InvalidName(f"alias {raw!r} is empty")
    if len(alias) > MAX_ALIAS_LENGTH:
        raise InvalidName(f"alias {raw!r} is longer than {MAX_ALIAS_LENGTH} characters")
    if not _ALIAS.match(alias):
        raise InvalidName(
            f"alias {raw!r}: use lowercase letters, digits, '_' and '-', starting with a letter"
        )
    if alias in RESERVED_ALIASES:
        raise InvalidName(f"alias {raw!r} is reserved (NAME@{alias} names a version)")
    return alias
