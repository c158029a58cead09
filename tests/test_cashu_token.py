"""Reading a serialized Cashu token's face in process (service/ecash/token.py): what the
wallet would refuse is refused before any intent is written or wallet process started."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import cbor2
import pytest

from service.ecash.token import Face, NotAToken, read

MINT = "http://127.0.0.1:3338"


def v4(token: dict[str, Any]) -> str:
    return "cashuB" + base64.urlsafe_b64encode(cbor2.dumps(token)).decode().rstrip("=")


def v3(token: dict[str, Any], *, alphabet: str = "url") -> str:
    raw = json.dumps(token).encode()
    encode = base64.urlsafe_b64encode if alphabet == "url" else base64.b64encode
    return "cashuA" + encode(raw).decode()


def proof_v4(amount: Any) -> dict[str, Any]:
    return {"a": amount, "s": secrets.token_hex(32), "c": secrets.token_bytes(33)}


def proof_v3(amount: Any) -> dict[str, Any]:
    return {"amount": amount, "id": "009a1f293253e41e", "secret": "s", "C": "02ab"}


def test_a_v4_token_s_face_sums_every_keyset_s_proofs() -> None:
    token = {
        "m": MINT,
        "u": "sat",
        "t": [
            {"i": bytes.fromhex("00ad268c4d1f5826"), "p": [proof_v4(8), proof_v4(2)]},
            {"i": bytes.fromhex("00ffd48b8f5ecf80"), "p": [proof_v4(1)]},
        ],
    }
    assert read(v4(token)) == Face(MINT, "sat", 11, 3)


def test_a_v3_token_in_either_alphabet_with_or_without_padding() -> None:
    token = {"token": [{"mint": MINT, "proofs": [proof_v3(4), proof_v3(16)]}]}
    for alphabet in ("url", "standard"):
        serialized = v3(token, alphabet=alphabet)
        assert read(serialized) == Face(MINT, "sat", 20, 2)  # no unit: sat
        assert read(serialized.rstrip("=")) == Face(MINT, "sat", 20, 2)


@pytest.mark.parametrize(
    "serialized",
    [
        "cashuB" + "A" * 40,  # base64, not CBOR of a token
        "cashuB!!!!",
        "cashuC" + v4({"m": MINT, "u": "sat", "t": [{"i": b"", "p": [proof_v4(1)]}]})[6:],
        v4({"m": MINT, "u": "sat", "t": []}),  # no proofs
        v4({"m": MINT, "u": "sat", "t": [{"i": b"", "p": []}]}),
        v4({"m": MINT, "t": [{"i": b"", "p": [proof_v4(1)]}]}),  # no unit
        v4({"m": 7, "u": "sat", "t": [{"i": b"", "p": [proof_v4(1)]}]}),
        v4({"m": MINT, "u": "sat", "t": [{"i": b"", "p": [proof_v4(0)]}]}),
        v4({"m": MINT, "u": "sat", "t": [{"i": b"", "p": [proof_v4(-4)]}]}),
        v4({"m": MINT, "u": "sat", "t": [{"i": b"", "p": [proof_v4(True)]}]}),
        v4({"m": MINT, "u": "sat", "t": [{"i": b"", "p": [proof_v4(2**60)] * 9}]}),
        v4({"m": MINT, "u": "sat", "t": [{"i": b"", "p": ["not a proof"]}]}),
        v3({"token": []}),
        v3(
            {
                "token": [
                    {"mint": MINT, "proofs": [proof_v3(1)]},
                    {"mint": "http://other", "proofs": [proof_v3(1)]},
                ]
            }
        ),  # two mints: a request is paid at one
        # CBOR's semantic tags decode to what their types raise on
        v4({"m": cbor2.CBORTag(5, [10**20, 3]), "u": "sat", "t": []}),
        v4({"m": cbor2.CBORTag(4, ["a", "b"]), "u": "sat", "t": []}),
        v4({"m": cbor2.CBORTag(4, [10**30, 1]), "u": "sat", "t": []}),
        v4({"m": cbor2.CBORTag(35, 0), "u": "sat", "t": []}),
        v4({"m": cbor2.CBORTag(100, 10**30), "u": "sat", "t": []}),
        v4({"m": cbor2.CBORTag(5, [[1], [2]]), "u": "sat", "t": []}),
        "cashuB" + base64.urlsafe_b64encode(b"\x81" * 5000 + b"\x00").decode(),  # deep nesting
        "cashuA" + base64.urlsafe_b64encode(b"[" * 5000).decode(),
    ],
)
def test_what_is_no_token_this_service_reads_is_refused(serialized: str) -> None:
    with pytest.raises(NotAToken):
        read(serialized)
