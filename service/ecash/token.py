"""What a serialized Cashu token says about itself (NUT-00), read in process: its mint, unit,
face value and number of proofs. Enough to refuse a token the wallet would refuse anyway
(another mint, another unit, too many proofs, too little value, not a token at all) before
an intent is written or the wallet is started; whether its proofs are real only the mint can
say, at the swap.

- ``cashuA``: base64 (either alphabet, padding optional) of JSON
  ``{"token": [{"mint": url, "proofs": [{"amount": n, ...}]}], "unit": "sat"}``; a missing
  unit is sat.
- ``cashuB``: base64url of CBOR ``{"m": url, "u": unit, "t": [{"i": keyset, "p": [{"a": n,
  ...}]}]}``.

A token naming more than one mint is refused: a request is paid at one mint.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import cbor2

#: Bounds a face value can take (an amount is a count of the unit; 2^53 keeps sums exact).
MAX_AMOUNT = 2**53


class NotAToken(ValueError):
    """The text is not a serialized token this service reads (the message says why)."""


@dataclass(frozen=True, slots=True)
class Face:
    mint: str
    unit: str
    amount: int  # in ``unit``
    proofs: int


def read(serialized: str) -> Face:
    """The face of ``serialized`` (a :class:`NotAToken` if it is none)."""
    prefix, body = serialized[:6], serialized[6:]
    try:
        raw = base64.urlsafe_b64decode(_padded(body.replace("+", "-").replace("/", "_")))
        if prefix == "cashuA":
            return _v3(json.loads(raw))
        if prefix == "cashuB":
            return _v4(cbor2.loads(raw))
    except NotAToken:
        raise
    except Exception as exc:  # CBOR's semantic tags raise whatever their types raise
        raise NotAToken(f"not a Cashu token ({type(exc).__name__})") from None
    raise NotAToken("a serialized Cashu token starts with cashuA or cashuB")


def _padded(text: str) -> str:
    return text + "=" * (-len(text) % 4)


def _v3(token: Any) -> Face:
    entries = _field(token, "token", list)
    if len(entries) != 1:
        raise NotAToken("a token must name exactly one mint")
    entry = entries[0]
    unit = token.get("unit", "sat")
    return _face(_field(entry, "mint", str), unit, _field(entry, "proofs", list), "amount")


def _v4(token: Any) -> Face:
    proofs: list[Any] = []
    for keyset in _field(token, "t", list):
        proofs += _field(keyset, "p", list)
    return _face(_field(token, "m", str), token.get("u"), proofs, "a")


def _face(mint: str, unit: Any, proofs: list[Any], amount_key: str) -> Face:
    if not isinstance(unit, str) or not unit:
        raise NotAToken("the token names no unit")
    if not proofs:
        raise NotAToken("the token carries no proofs")
    total = 0
    for proof in proofs:
        amount = _field(proof, amount_key, int)
        if isinstance(amount, bool) or not 0 < amount < MAX_AMOUNT:
            raise NotAToken("a proof's amount is not a positive whole number")
        total += amount
    if total >= MAX_AMOUNT:
        raise NotAToken("the token's amounts add up to more than any mint issues")
    return Face(mint, unit, total, len(proofs))


def _field(record: Any, name: str, kind: type) -> Any:
    if not isinstance(record, dict) or not isinstance(record.get(name), kind):
        raise NotAToken(f"the token has no {name!r} of the right type")
    return record[name]
