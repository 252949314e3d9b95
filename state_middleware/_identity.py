"""Who is calling: the owner key every stored record is scoped to."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from asgiref.typing import HTTPScope

__all__ = ["IdentityFunc", "default_identity"]

IdentityFunc = Callable[[HTTPScope], "str | None"]

_CREDENTIAL_HEADERS = (b"authorization", b"openai-organization", b"openai-project")


def default_identity(scope: HTTPScope) -> str:
    """A hash of the caller's credentials; the raw key is never kept.

    ``Authorization`` plus ``OpenAI-Organization`` and ``OpenAI-Project`` when sent.
    Callers without credentials share one anonymous owner.
    """
    return hash_credentials(scope["headers"])


def hash_credentials(headers: Iterable[tuple[bytes, bytes]]) -> str:
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in _CREDENTIAL_HEADERS and lowered not in found:
            found[lowered] = value.strip()
    material = b"\x00".join(found.get(name, b"") for name in _CREDENTIAL_HEADERS)
    return hashlib.blake2b(material, digest_size=16, person=b"state-mw-owner").hexdigest()
