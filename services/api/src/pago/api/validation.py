"""Reusable pydantic field types for request input (strings that Postgres and humans accept)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field


def safe_text(value: str) -> str:
    """Refuse what a ``text`` column cannot hold: NUL and unpaired surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


_NOT_IN_AN_IRI = frozenset(' "<>\\^`{|}')
"""ASCII that RFC 3986/3987 never allow unencoded (besides the controls)."""
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _control(c: str) -> bool:
    """C0, DEL and C1 (U+0080–U+009F): no IRI holds them (RFC 3987 ``ucschar`` starts at
    U+00A0)."""
    return ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F


def http_url(value: str) -> str:
    """An absolute http(s) URL or IRI (RFC 3987: non-ASCII letters accepted unencoded), kept
    exactly as given (no normalization)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError("must be an absolute http(s) URL") from None
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() or _control(c) or c in _NOT_IN_AN_IRI for c in value)
        or _BAD_ESCAPE.search(value)
    ):
        raise ValueError("must be an absolute http(s) URL")
    return value


def upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


MAX_UNIX_SECONDS = 253_402_300_799
"""9999-12-31T23:59:59Z, the last second a timestamp can name."""
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def unix_seconds(value: object) -> object:
    """A number is unix seconds, always (pydantic alone reads numbers past 2e10 as
    milliseconds, which the API never promised); anything else is left to RFC 3339 parsing."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, int | float):
        if not 0 <= value <= MAX_UNIX_SECONDS:
            raise ValueError(f"unix seconds must be between 0 and {MAX_UNIX_SECONDS}")
        return datetime.fromtimestamp(value, UTC)
    return value


def as_utc(value: datetime) -> datetime:
    """A timestamp without an offset is UTC (RFC 3339 wants one; be lenient on input)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NO_NUL_PATTERN = "^[^\x00]*$"
HTTP_URL_PATTERN = (
    '^[Hh][Tt][Tt][Pp][Ss]?://(?:[^\x00-\x20\x7f-\x9f"<>\\\\^`{|}%]|%[0-9A-Fa-f]{2})+$'
)
"""The shape ``http_url`` checks (it also needs a host; the document cannot say it all)."""

SafeStr = Annotated[
    str, Field(json_schema_extra={"pattern": NO_NUL_PATTERN}), AfterValidator(safe_text)
]
HttpUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        examples=["https://shop.example/thanks"],
        # No "format": the pattern is what ``http_url`` checks, character for character (an
        # internationalised URL, ``https://bücher.example/``, is accepted unencoded, which
        # neither "uri" nor the full RFC 3987 "iri" grammar describes).
        json_schema_extra={"pattern": HTTP_URL_PATTERN},
    ),
    AfterValidator(safe_text),
    AfterValidator(http_url),
]
UpperCase = BeforeValidator(upper)
UtcDatetime = Annotated[datetime, BeforeValidator(unix_seconds), AfterValidator(as_utc)]
"""RFC 3339 (an offset-less one is UTC) or unix seconds."""
