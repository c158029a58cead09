"""The operator's Cashu wallet, one command per run, run by the interpreter that has the PyPI
``cashu`` package (nutshell) installed: its pins (httpx<0.26, bitstring<4, mnemonic<0.21) rule
it out of satrouter's own environment, so satrouter calls it as a separate process
(:mod:`service.ecash.wallet`). It imports nothing from satrouter.

Usage: ``python nutshell_wallet.py COMMAND`` with a JSON object on stdin; one JSON object on
stdout: the result, or ``{"error": kind, "detail": ...}``. Commands:

- ``redeem`` {token, mint, min_sat, max_proofs}: decode; refuse a token of another mint, a unit
  other than sat, more than ``max_proofs`` proofs or, less the mint's swap fee, less than
  ``min_sat``; else swap every proof at the mint for fresh ones kept here (so a double spend
  fails now, before any work).
  -> {mint, amount, fee}
- ``send`` {mint, amount}: a fresh token of ``amount`` sat from the proofs held.
  -> {token, fee}
- ``melt`` {mint, bolt11}: pay an invoice from the proofs held. -> {paid, amount, fee, preimage}
- ``balance`` {mint}: -> {amount} (the proofs held, in sat, not reserved for a token sent)
- ``recover`` {token_hash, mint}: what became of a redeem a crash interrupted, from the
  journal ``redeem`` writes before it asks the mint to swap (the wallet's own record of the
  swap: the inputs' Ys and the deterministic counters of its outputs) and the mint (NUT-07
  state of the inputs, NUT-09 restore of the outputs).
  -> {state: none|unspent|pending|redeemed|spent_elsewhere|unclear, mint, amount, fee}

A refusal says ``swapped: false`` when nothing can have been swapped (refused before the swap,
or by the mint itself); without it the swap's outcome is unknown and ``recover`` tells.

Wallet data: ``$CASHU_DIR/<sha256(mint)[:16]>``. The caller runs one command per mint at a time:
it holds an OS lock on ``$CASHU_DIR/<sha256(mint)[:16]>.lock`` and hands this process the locked
file, so the lock outlives a caller killed while a command runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
from typing import Any


class Refused(Exception):
    def __init__(self, kind: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.extra = extra


def _classify(exc: Exception) -> Refused:
    text = str(exc)
    lowered = text.lower()
    if "already spent" in lowered or "(code: 11001)" in lowered:
        return Refused("spent", "the token's proofs were already spent", swapped=False)
    if "pending" in lowered and "code: 11002" in lowered:
        return Refused("pending", "the token's proofs are pending at the mint", swapped=False)
    if type(exc).__name__ in ("ConnectError", "ConnectTimeout"):
        return Refused(
            "mint_unreachable", f"the mint did not answer: {type(exc).__name__}", swapped=False
        )
    if type(exc).__name__ in ("ReadTimeout", "ReadError", "RemoteProtocolError"):
        # the request may have reached the mint: the swap may have happened
        return Refused("mint_unreachable", f"the mint did not answer: {type(exc).__name__}")
    if text.startswith("Mint Error"):
        return Refused("mint_refused", text[:300], swapped=False)
    return Refused("wallet_error", f"{type(exc).__name__}: {text[:300]}")


def _journal(mint: str, token_hash: str) -> str:
    """Where ``redeem`` records a swap before asking the mint for it."""
    name = hashlib.sha256(mint.encode()).hexdigest()[:16]
    folder = os.path.join(os.environ["CASHU_DIR"], f"{name}-swaps")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{token_hash}.json")


def _write_durably(path: str, record: dict[str, Any]) -> None:
    partial = path + ".part"
    with open(partial, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    folder = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


async def _wallet(mint: str) -> Any:
    from cashu.wallet.helpers import init_wallet
    from cashu.wallet.wallet import Wallet

    root = os.environ["CASHU_DIR"]
    name = hashlib.sha256(mint.encode()).hexdigest()[:16]
    wallet = await Wallet.with_db(mint, db=os.path.join(root, name), name=name)
    await init_wallet(wallet, load_proofs=True)
    await wallet.load_mint()
    await _prune_unstarted(wallet, mint)  # before any counter is taken
    return wallet


async def redeem(args: dict[str, Any]) -> dict[str, Any]:
    from cashu.core.helpers import sum_proofs
    from cashu.wallet.helpers import deserialize_token_from_string

    try:
        token = deserialize_token_from_string(str(args["token"]))
        proofs = token.proofs
        mint, unit, amount = token.mint, token.unit, token.amount
    except Exception as exc:
        raise Refused(
            "invalid_token", f"not a Cashu token: {type(exc).__name__}", swapped=False
        ) from None
    if mint != args["mint"]:
        raise Refused(
            "mint_not_allowed", f"{mint} is not the mint asked for", mint=mint, swapped=False
        )
    if unit != "sat":
        raise Refused(
            "unit_not_supported", f"the token is in {unit}; only sat is accepted", swapped=False
        )
    if len(proofs) > int(args["max_proofs"]):
        raise Refused(
            "too_many_proofs", f"the token has {len(proofs)} proofs", mint=mint, swapped=False
        )
    try:
        wallet = await _wallet(mint)
        await wallet._expand_short_keyset_ids(proofs)
        fee = wallet.get_fees_for_proofs(proofs)
        wallet.verify_proofs_dleq(proofs)  # what redeem checks first: before the journal
        unsigned = [p for p in proofs if p.amount not in _keys(wallet, p.id)]
    except Exception as exc:
        raise _swap_not_started(_classify(exc)) from None
    if unsigned:
        detail = f"the mint has no key for a proof of {unsigned[0].amount}"
        raise Refused("invalid_token", detail, swapped=False)
    if amount - fee < int(args["min_sat"]):
        detail = f"the token carries {amount} sat, {amount - fee} sat after the mint's fee"
        raise Refused("below_price", detail, amount=amount, fee=fee, mint=mint, swapped=False)
    journal = _journal(mint, hashlib.sha256(str(args["token"]).encode()).hexdigest())
    try:
        from cashu.wallet.crud import bump_secret_derivation

        keep, send = wallet.determine_output_amounts(
            proofs, 0, include_fees=False, keyset_id_outputs=wallet.keyset_id
        )
        # The swap's outputs take the next counters (NUT-13): recorded before the mint is
        # asked, so a crash after its answer leaves them restorable (NUT-09).
        counter = await bump_secret_derivation(
            db=wallet.db, keyset_id=wallet.keyset_id, by=0, skip=True
        )
        _write_durably(
            journal,
            {
                "mint": mint,
                "ys": [p.Y for p in proofs],
                "keyset_id": wallet.keyset_id,
                "counter": counter,
                "outputs": len(keep) + len(send),
                "amount": amount,
                "fee": fee,
            },
        )
    except Exception as exc:
        raise _swap_not_started(_classify(exc)) from None
    try:
        kept, _ = await wallet.redeem(proofs)
    except Exception as exc:
        refused = _classify(exc)
        if refused.extra.get("swapped") is False:  # the mint said no: nothing to recover
            os.remove(journal)
        raise refused from None
    return {"mint": mint, "amount": amount, "fee": amount - sum_proofs(kept)}


def _keys(wallet: Any, keyset_id: str) -> Any:
    keyset = wallet.keysets.get(keyset_id)
    return keyset.public_keys if keyset is not None else {}


async def _prune_unstarted(wallet: Any, mint: str) -> None:
    """Delete the journals of swaps that never started: their outputs' counters were never
    taken (the keyset's counter is still the journal's), so the mint cannot have been asked,
    and the next operation takes those counters for its own outputs: a journal left naming
    them would later pass that operation's outputs for the swap's."""
    from cashu.wallet.crud import bump_secret_derivation

    folder = os.path.dirname(_journal(mint, "x"))
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.endswith(".json"):
            continue
        try:
            record = _read_journal(path) or {}
            keyset, counter = str(record["keyset_id"]), int(record["counter"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a journal this wallet can read: left as it is, for the operator
        now = await bump_secret_derivation(db=wallet.db, keyset_id=keyset, by=0, skip=True)
        if now <= counter:
            os.remove(path)


def _read_journal(path: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        record: dict[str, Any] = json.load(f)
    return record


def _swap_not_started(refused: Refused) -> Refused:
    refused.extra["swapped"] = False
    return refused


async def recover(args: dict[str, Any]) -> dict[str, Any]:
    import httpx

    path = _journal(str(args["mint"]), str(args["token_hash"]))
    record = _read_journal(path)
    if record is None:
        return {"state": "none"}
    mint = record["mint"]
    found = {"mint": mint, "amount": record["amount"], "fee": record["fee"]}
    try:
        wallet = await _wallet(mint)  # prunes the journal if its swap never started
    except Exception as exc:
        raise _classify(exc) from None
    if _read_journal(path) is None:  # pruned: never asked of the mint
        return {"state": "none"}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(f"{mint.rstrip('/')}/v1/checkstate", json={"Ys": record["ys"]})
            answer.raise_for_status()
        states = {s["state"] for s in answer.json()["states"]}
        if "PENDING" in states:
            return {"state": "pending", **found}
        if states == {"UNSPENT"}:  # not swapped yet (whether it may still be is the caller's call)
            return {"state": "unspent", **found}
        start, count = int(record["counter"]), int(record["outputs"])
        secrets, rs, paths = await wallet.generate_secrets_from_to(
            start, start + count - 1, keyset_id=record["keyset_id"]
        )
        rows = await wallet.db.fetchall("SELECT secret FROM proofs")
        rows += await wallet.db.fetchall("SELECT secret FROM proofs_used")
        held = {row["secret"] for row in rows}
        missing = [i for i, secret in enumerate(secrets) if secret not in held]
        restored = 0
        if missing:
            pick = [secrets[i] for i in missing], [rs[i] for i in missing]
            outputs, _ = wallet._construct_outputs(
                [1] * len(missing), pick[0], pick[1], keyset_id=record["keyset_id"]
            )
            _, proofs = await wallet.restore_promises(
                outputs, pick[0], pick[1], [paths[i] for i in missing]
            )
            restored = len(proofs)
    except Exception as exc:
        raise _classify(exc) from None
    if restored == len(missing):
        return {"state": "redeemed", **found}  # the swap's outputs are this wallet's
    if len(missing) == count and restored == 0:
        return {"state": "spent_elsewhere", **found}  # spent, but not by this wallet's swap
    return {"state": "unclear", **found}


async def send(args: dict[str, Any]) -> dict[str, Any]:
    amount = int(args["amount"])
    try:
        wallet = await _wallet(str(args["mint"]))
        before = wallet.available_balance.amount
        proofs, _ = await wallet.select_to_send(wallet.proofs, amount, set_reserved=True)
        token = await wallet.serialize_proofs(proofs)
        await wallet.load_proofs(reload=True)
        after = wallet.available_balance.amount
    except Exception as exc:
        raise _classify(exc) from None
    return {"token": token, "amount": amount, "fee": before - after - amount}


async def melt(args: dict[str, Any]) -> dict[str, Any]:
    try:
        wallet = await _wallet(str(args["mint"]))
        before = wallet.available_balance.amount
        quote = await wallet.melt_quote(str(args["bolt11"]))
        total = quote.amount + quote.fee_reserve
        proofs, _ = await wallet.select_to_send(wallet.proofs, total, include_fees=True)
        result = await wallet.melt(proofs, str(args["bolt11"]), quote.fee_reserve, quote.quote)
        await wallet.load_proofs(reload=True)
        after = wallet.available_balance.amount
    except Exception as exc:
        raise _classify(exc) from None
    paid = str(getattr(result, "state", "")).upper().endswith("PAID") or bool(
        getattr(result, "paid", False)
    )
    spent = before - after
    return {
        "paid": paid,
        "amount": quote.amount,
        "fee": spent - quote.amount if paid else 0,
        "spent": spent,
        "preimage": getattr(result, "payment_preimage", None),
    }


async def balance(args: dict[str, Any]) -> dict[str, Any]:
    try:
        wallet = await _wallet(str(args["mint"]))
    except Exception as exc:
        raise _classify(exc) from None
    return {"amount": wallet.available_balance.amount}


COMMANDS = {
    "redeem": redeem,
    "send": send,
    "melt": melt,
    "balance": balance,
    "recover": recover,
}


def main() -> int:
    command = COMMANDS[sys.argv[1]]
    args = json.loads(sys.stdin.read())
    # Bounded even when its caller is gone (killed, or no longer waiting): it holds the turn.
    signal.alarm(max(1, int(args.get("timeout", 0))))
    out = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):  # nutshell prints as it goes
            result = asyncio.run(command(args))
    except Refused as refused:
        result = {"error": refused.kind, "detail": refused.detail, **refused.extra}
    out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
