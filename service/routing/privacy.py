"""Finding sensitive content in a prompt before it is routed anywhere.

Kinds found (never the content itself, which is not recorded): ``email``, ``phone``,
``payment_card`` (13-19 digits passing the Luhn check), ``iban`` (the ISO 13616 mod-97 check),
``national_id`` (US SSN shapes), ``api_key`` (well-known key formats), ``private_key`` (PEM
blocks, raw hex keys marked as such), ``seed_phrase`` (BIP-39 mnemonics whose checksum holds,
checked with the ``mnemonic`` library), and operator-defined patterns. Checks with checksums
keep false positives down: a 16-digit order number that fails Luhn is not a card.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from mnemonic import Mnemonic

# Every pattern stays linear on any input (a request body of a megabyte of digits must not
# stall the event loop): runs start only where the character before cannot continue them, and
# quantifiers that cannot lead to a match do not backtrack.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ().-]{8,18}\d(?!\w)")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
_API_KEYS = re.compile(
    r"\b(?:sk-(?:or-|ant-|proj-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|sk_live_[0-9A-Za-z]{24,})\b"
)
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----|\b(?:private|secret)[ _]?key\W{0,3}[0-9a-fA-F]{64}\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z]+")
_DIGIT = re.compile(r"\d")
_KEY_PREFIXES = ("sk-", "sk_live_", "AKIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "AIza")
#: Checksum checks per prompt. A real seed phrase is a run of 12-24 such words; only an odd or
#: hostile prompt has runs long and many enough to need more, and it is then treated as holding
#: one (a long run of BIP-39 words almost surely contains a window whose checksum holds).
SEED_CHECKS = 5_000


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _iban_ok(candidate: str) -> bool:
    text = candidate.replace(" ", "")
    if not 15 <= len(text) <= 34:
        return False
    rearranged = text[4:] + text[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


@lru_cache(maxsize=1)
def _bip39() -> tuple[Mnemonic, frozenset[str]]:
    mnemonic = Mnemonic("english")
    return mnemonic, frozenset(mnemonic.wordlist)


def _has_seed_phrase(lowered: str) -> bool:
    mnemonic, words = _bip39()
    budget = SEED_CHECKS
    run: list[str] = []
    for word in [*_WORD.findall(lowered), ""]:
        if word in words:
            run.append(word)
            continue
        for size in (24, 21, 18, 15, 12):
            for start in range(0, len(run) - size + 1):
                budget -= 1
                if budget < 0 or mnemonic.check(" ".join(run[start : start + size])):
                    return True
        run = []
    return False


@dataclass(frozen=True, slots=True)
class Detector:
    """Finds the kinds of sensitive content in text; ``extra`` are the operator's patterns."""

    extra: Mapping[str, re.Pattern[str]] = field(default_factory=dict)

    def kinds(self, texts: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for text in texts:
            lowered = text.lower()
            # Cheap substring tests first: most prompts skip most patterns.
            if "@" in text and _EMAIL.search(text):
                found.add("email")
            if _DIGIT.search(text):
                found.update(_numbers(text))
            if any(prefix in text for prefix in _KEY_PREFIXES) and _API_KEYS.search(text):
                found.add("api_key")
            if ("private" in lowered or "secret" in lowered) and _PRIVATE_KEY.search(text):
                found.add("private_key")
            if _has_seed_phrase(lowered):
                found.add("seed_phrase")
            found.update(name for name, pattern in self.extra.items() if pattern.search(text))
        return found


def _numbers(text: str) -> set[str]:
    """Kinds made of digits: cards, IBANs, phone numbers, national ids."""
    found: set[str] = set()
    cards = [m.group() for m in _CARD.finditer(text) if _is_card(m.group())]
    if cards:
        found.add("payment_card")
    ibans = [m.group() for m in _IBAN.finditer(text) if _iban_ok(m.group())]
    if ibans:
        found.add("iban")
    rest = text
    for number in (*cards, *ibans):  # these also look like long phone numbers
        rest = rest.replace(number, " ")
    if any(
        10 <= sum(c.isdigit() for c in m.group()) <= 15  # E.164: at most 15
        for m in _PHONE.finditer(rest)
    ):
        found.add("phone")
    if _SSN.search(text):
        found.add("national_id")
    return found


def _is_card(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    return 13 <= len(digits) <= 19 and _luhn(digits)
