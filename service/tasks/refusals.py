"""Why the engine will not do what it was asked, in its own words.

A :class:`Refusal` names its ``kind`` (a stable word clients branch on), says why in
``detail``, and may add fields for the caller (``extra``), when to try again
(``retry_after``, seconds), whether an immediate retry can pass (``should_retry``) and, for a
request that a payment would let through, the ``challenge`` to pay (an
:class:`~.offers.Offer`: one invoice and its L402 token).
The HTTP status of each kind lives in one table at the edge (the problems module of the
HTTP package), so nothing here knows HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .offers import Offer


class Refusal(Exception):
    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        extra: Mapping[str, Any] | None = None,
        retry_after: int | None = None,
        should_retry: bool = True,
        challenge: Offer | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.extra = dict(extra or {})
        self.retry_after = retry_after
        self.should_retry = should_retry
        self.challenge = challenge  # a fresh offer: its invoice and L402 token

    def __repr__(self) -> str:
        return f"Refusal({self.kind!r}, {self.detail!r})"
