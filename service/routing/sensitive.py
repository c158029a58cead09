"""Finding sensitive content in text (the kinds only; ``privacy.py`` decides where a
request holding them may go).

Kinds found (never the content itself, which is not recorded):

- ``payment_card``: 13-19 digits with a card network's prefix and length, passing the Luhn
  check (``python-stdnum``);
- ``iban``: IBANs whose country format and ISO 13616 mod-97 check hold (``python-stdnum``);
- ``phone``: numbers that Google's libphonenumber (``phonenumbers``) validates: in
  international form (``+44 20 7946 0958``, ``0044 ...``) anywhere; in national form
  (``(415) 555-2671``, ``020 7946 0958``) when a word such as "call", "phone" or "mobile"
  comes just before, for the regions in :data:`NATIONAL_REGIONS`;
- ``email``; ``national_id`` (US SSN shapes);
- ``api_key``: well-known key and token formats (OpenAI, OpenRouter, Anthropic, AWS, GitHub,
  Slack, Google, Stripe, JWTs, LND macaroons) and secrets assigned to a name such as
  ``api_key``, ``token`` or ``password``;
- ``private_key``: PEM blocks, extended private keys (``xprv``), Nostr ``nsec`` keys, and hex
  keys labelled as private or secret;
- ``seed_phrase``: BIP-39 mnemonics whose checksum holds (the ``mnemonic`` library);
- the operator's own patterns (``[privacy.patterns]``).

Names and postal addresses are not detected (docs/routing.md says why).

Cost: the text is scanned in windows of :data:`WINDOW` characters, every pattern linear, and
each check (a checksum, a phone number's validation) is one step; ``privacy.review`` gives the
event loop back between steps whenever :data:`SLICE_SECONDS` have passed. Expensive checks have a
budget per request (:data:`PHONE_CHECKS`, :data:`SEED_CHECKS`); a request that exhausts one is
treated as holding that kind. A kind, once found, is not looked for again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import phonenumbers
from mnemonic import Mnemonic
from stdnum import iban as stdnum_iban
from stdnum import luhn

#: Characters scanned per step; patterns see :data:`_OVERLAP` more, so a match that starts near
#: the end of a window is whole.
WINDOW = 4096
_OVERLAP = 512
#: The longest the event loop waits while a request is scanned.
SLICE_SECONDS = 0.002
#: Phone number validations per request; a request with more phone-like candidates than this is
#: treated as holding a phone number.
PHONE_CHECKS = 2_000
#: Checksum checks per prompt. A real seed phrase is a run of 12-24 such words; only an odd or
#: hostile prompt has runs long and many enough to need more, and it is then treated as holding
#: one (a long run of BIP-39 words almost surely contains a window whose checksum holds).
SEED_CHECKS = 5_000
#: Regions whose national number formats are tried after a phone word ("call 020 7946 0958").
NATIONAL_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "AU", "BR", "JP")

# Patterns start with a literal or a plain character class where they can, so the regex engine
# skips ahead fast; what comes before is checked by a lookbehind after it.
_EMAIL = re.compile(
    r"@(?<=[A-Za-z0-9._%+-]@)(?:[A-Za-z0-9-]+\.)+([A-Za-z]{2,24})"
    r"(?![A-Za-z0-9-]|:[\w~/])"  # "git@github.com:org/repo" is an SSH remote
)
#: "icon@2x.png" is a file, not an address.
_FILE_SUFFIXES = frozenset(
    "png jpg jpeg gif svg webp ico css js ts tsx jsx py md txt json yaml yml toml lock zip gz "
    "tar pdf mp4 mp3 wav html".split()
)
_CARD = re.compile(r"\d(?<![\d.,/-]\d)(?:[ -]?\d){12,18}(?!\d|[.,/-]\d)")
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?:[ -]?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_PHONE = re.compile(r"(?<![\w+.,/:-])(?:\+|00)?\(?\d[\d \-.()/]{5,21}\d(?![\w:]|[.,/-]\d)")
_PHONE_WORD = re.compile(
    r"\b(?:call(?:ing)?|phone|ph|tel|telephone|mobile|mob|cell|ring|text|sms|whatsapp|signal|"
    r"fax|dial|contact|reach(?: me| us)?|hotline|landline|my number|her number|his number|"
    r"their number|your number|telefon|t[ée]l[ée]phone|t[ée]l|handy|portable|m[óo]vil|"
    r"tel[ée]fono|cellulare|telefoonnummer|mobiel)\b[^\d\n]{0,30}$",
    re.IGNORECASE,
)
#: Letters every phone word of :data:`_PHONE_WORD` contains.
_PHONE_WORD_STEMS = (
    "cal",
    "ph",
    "tel",
    "t\u00e9l",
    "mob",
    "cell",
    "ring",
    "text",
    "sms",
    "whatsapp",
    "signal",
    "fax",
    "dial",
    "contact",
    "reach",
    "hotline",
    "line",
    "number",
    "handy",
    "portable",
    "m\u00f3vil",
    "movil",
    "t\u00e9l\u00e9",
)
_SSN = re.compile(r"\d(?<![\d-]\d)\d\d-\d\d-\d{4}(?![\d-])")
_API_KEY = re.compile(
    r"(?<![A-Za-z0-9_-])(?:sk-(?:or-v1-|ant-(?:api\d\d-)?|proj-)?[A-Za-z0-9_-]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|[sr]k_live_[0-9A-Za-z]{24,}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
    r"|0201036c6e64[0-9a-f]{40,})"
)
#: A secret assigned to a name: ``api_key = "..."``, ``"password": "..."``, ``TOKEN=...``: the
#: value after ``:`` or ``=``, and the name (:data:`_SECRET_NAME`) checked before it.
_ASSIGNED = re.compile(r"[:=][ \t]*[\"']?([A-Za-z0-9_\-+/=.!@#$%^&*~]{8,200})")
_SECRET_NAME = re.compile(
    r"(?:api[_-]?key|apikey|secret(?:[_-]?key)?|client[_-]?secret|access[_-]?key|auth[_-]?token|"
    r"access[_-]?token|token|password|passwd|pwd|passphrase)[\"']?[ \t]*$",
    re.IGNORECASE,
)
_PRIVATE_KEYS = (
    re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    re.compile(r"prv(?<=(?<![A-Za-z0-9])[xtyzuv]prv)[1-9A-HJ-NP-Za-km-z]{100,112}(?![A-Za-z0-9])"),
    re.compile(r"nsec1(?<![a-z0-9]nsec1)[02-9ac-hj-np-z]{58}(?![a-z0-9])"),
)
#: 64 hex digits after "private key", "secret key", "privkey"...: the label checked before "key".
_LABELLED_HEX = re.compile(r"[Kk][Ee][Yy]\W{0,3}(?:0x)?[0-9a-fA-F]{64}(?![0-9a-fA-F])")
_KEY_LABEL = re.compile(r"(?:private|secret|priv)[ _-]?$", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]+")
_NOT_DIGIT = re.compile(r"\D")

#: Card networks' first digits and lengths (ISO/IEC 7812 issuer ranges in use).
_CARD_NETWORKS: tuple[tuple[re.Pattern[str], frozenset[int]], ...] = (
    (re.compile(r"4"), frozenset({13, 16, 19})),  # Visa
    (re.compile(r"5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)"), frozenset({16})),  # Mastercard
    (re.compile(r"3[47]"), frozenset({15})),  # American Express
    (re.compile(r"6(?:011|4[4-9]|5)"), frozenset({16, 19})),  # Discover
    (re.compile(r"35(?:2[89]|[3-8]\d)"), frozenset({16, 17, 18, 19})),  # JCB
    (re.compile(r"3(?:0[0-5]|[689])"), frozenset({14, 16, 19})),  # Diners Club
    (re.compile(r"62"), frozenset({16, 17, 18, 19})),  # UnionPay
    (re.compile(r"5[06-9]|6\d"), frozenset({12, 13, 16, 19})),  # Maestro
)


def is_card(candidate: str) -> bool:
    digits = _NOT_DIGIT.sub("", candidate)
    return any(
        len(digits) in lengths and prefix.match(digits) for prefix, lengths in _CARD_NETWORKS
    ) and luhn.is_valid(digits)


def _iban_in(candidate: str) -> bool:
    """Whether the candidate, or the candidate less some trailing groups ("DE89 ... 00 EUR"),
    is a valid IBAN."""
    if candidate[2:4] in ("00", "01", "99"):  # ISO 13616 check digits are 02-98
        return False
    groups = re.split(r"[ -]", candidate)
    for end in range(len(groups), 0, -1):
        compact = "".join(groups[:end])
        if len(compact) < 15:
            return False
        if stdnum_iban.is_valid(compact):
            return True
    return False


def _ssn_ok(ssn: str) -> bool:
    """Areas 000, 666 and 900-999, group 00 and serial 0000 are never issued."""
    area, group, serial = ssn.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _keyish(key: str) -> bool:
    """``sk-`` keys are random: "sk-learn-tutorial-part-2" is not one."""
    if not key.startswith("sk-"):
        return True
    return any(c.isdigit() for c in key) and max(map(len, re.split(r"[-_]", key))) >= 16


def _secret_value(value: str) -> bool:
    """A value that looks like a credential, not a word, a placeholder or an expression."""
    value = value.rstrip(".")
    return (
        len(value) >= 8
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and "." not in value.strip(".")  # os.environ, config.api_key, settings.value1
        and not value.lower().startswith(("your", "xxx", "example", "placeholder", "changeme"))
    )


@lru_cache(maxsize=1)
def _bip39() -> tuple[Mnemonic, frozenset[str]]:
    mnemonic = Mnemonic("english")
    return mnemonic, frozenset(mnemonic.wordlist)


def _matches(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str] | None]:
    """``pattern``'s matches in ``text``, window by window; ``None`` after each window (a
    step). Windows see a little past their end, so matches shorter than the overlap are whole,
    and each match is reported once."""
    pos, size = 0, len(text)
    while pos < size:
        end = min(size, pos + WINDOW)
        last = pos
        for match in pattern.finditer(text, pos, min(size, end + _OVERLAP)):
            if match.start() >= end:
                break
            yield match
            last = match.end()
        yield None
        pos = max(end, last)


class _Scan:
    """One request's scan, as steps of bounded work; ``found`` holds the kinds found."""

    def __init__(self, text: str, extra: Mapping[str, re.Pattern[str]]) -> None:
        self.text = text
        self.extra = extra
        self.found: set[str] = set()
        self._seed_budget = SEED_CHECKS

    def steps(self) -> Iterator[None]:
        yield from self._kind("payment_card", _CARD, lambda m: is_card(m.group()))
        yield from self._kind("iban", _IBAN, lambda m: _iban_in(m.group()))
        yield from self._kind("email", _EMAIL, lambda m: m.group(1).lower() not in _FILE_SUFFIXES)
        yield from self._kind("national_id", _SSN, lambda m: _ssn_ok(m.group()))
        yield from self._kind("api_key", _API_KEY, lambda m: _keyish(m.group()))
        yield from self._kind("api_key", _ASSIGNED, self._assigned_secret)
        for pattern in _PRIVATE_KEYS:
            yield from self._kind("private_key", pattern, lambda m: True)
        yield from self._kind("private_key", _LABELLED_HEX, self._labelled)
        yield from self._phones()
        yield from self._seed_phrases()
        for name, pattern in self.extra.items():
            yield from self._kind(name, pattern, lambda m: True)

    def _kind(
        self, kind: str, pattern: re.Pattern[str], valid: Callable[[re.Match[str]], bool]
    ) -> Iterator[None]:
        if kind in self.found:
            return
        for match in _matches(pattern, self.text):
            if match is not None and valid(match):
                self.found.add(kind)
                return
            yield None

    def _assigned_secret(self, match: re.Match[str]) -> bool:
        start = match.start()
        named = _SECRET_NAME.search(self.text, max(0, start - 40), start)
        return named is not None and _secret_value(match.group(1))

    def _labelled(self, match: re.Match[str]) -> bool:
        start = match.start()
        return _KEY_LABEL.search(self.text, max(0, start - 12), start) is not None

    def _phones(self) -> Iterator[None]:
        budget = PHONE_CHECKS
        for match in _matches(_PHONE, self.text):
            yield None
            if match is None or "phone" in self.found:
                continue
            candidate = match.group()
            digits = sum(c.isdigit() for c in candidate)
            if not 7 <= digits <= 15 or is_card(candidate):
                continue
            start = match.start()
            if candidate.startswith(("+", "00")):
                regions: tuple[str | None, ...] = (None,)
            elif _phone_word_before(self.text, start):
                regions = NATIONAL_REGIONS
            else:
                continue
            # The matcher sees what follows too, so "2024-01-15 10:30" reads as a time.
            snippet = self.text[start : match.end() + 12]
            if candidate.startswith("00"):
                snippet = "+" + snippet[2:]
            for region in regions:
                budget -= 1
                if budget < 0 or _valid_phone_in(snippet, region):
                    self.found.add("phone")
                    return
                yield None

    def _seed_phrases(self) -> Iterator[None]:
        if "seed_phrase" in self.found:
            return
        _, words = _bip39()
        self._seed_budget = SEED_CHECKS
        run: list[str] = []
        for match in _matches(_WORD, self.text):
            if match is None:
                yield None
                continue
            word = match.group().lower()
            if word in words:
                run.append(word)
                continue
            if len(run) >= 12:
                yield from self._check_run(run)
                if "seed_phrase" in self.found:
                    return
            run = []
        yield from self._check_run(run)

    def _check_run(self, run: list[str]) -> Iterator[None]:
        """Whether some 12-24 words of a run of BIP-39 words are a mnemonic."""
        mnemonic, _ = _bip39()
        for size in (24, 21, 18, 15, 12):
            for start in range(0, len(run) - size + 1):
                self._seed_budget -= 1
                if self._seed_budget < 0 or mnemonic.check(" ".join(run[start : start + size])):
                    self.found.add("seed_phrase")
                    return
                yield None


def _phone_word_before(text: str, start: int) -> bool:
    before = text[max(0, start - 60) : start]
    lowered = before.lower()
    # A substring test first: the regex is slower, and most numbers have no phone word.
    return any(word in lowered for word in _PHONE_WORD_STEMS) and bool(_PHONE_WORD.search(before))


def _valid_phone_in(snippet: str, region: str | None) -> bool:
    matcher = phonenumbers.PhoneNumberMatcher(
        snippet, region, leniency=phonenumbers.Leniency.VALID, max_tries=4
    )
    return matcher.has_next()


@dataclass(frozen=True, slots=True)
class Detector:
    """Finds the kinds of sensitive content in text; ``extra`` are the operator's patterns."""

    extra: Mapping[str, re.Pattern[str]] = field(default_factory=dict)

    def scan(self, texts: Iterable[str]) -> _Scan:
        # Strings are joined by a line break, which no pattern crosses.
        return _Scan("\n".join(texts), self.extra)

    def kinds(self, texts: Iterable[str]) -> set[str]:
        scan = self.scan(texts)
        for _ in scan.steps():
            pass
        return scan.found
