"""Writes ``service/routing/privacy_corpus.jsonl``: the labelled strings ``make eval-privacy``
measures the privacy scan on.

Each line is ``{"id", "group", "text", "kinds"}``: a sensitive item of one kind in a prompt
an agent might send, or a benign look-alike (``kinds`` empty). Numbers are generated from a
fixed seed and are valid where the kind has a check: Luhn-valid cards with real network
prefixes, IBANs whose format and mod-97 check ``python-stdnum`` accepts, phone numbers that
libphonenumber accepts for their country, BIP-39 mnemonics whose checksum holds. The benign
strings are written for satrouter: dates, log lines, addresses of machines, versions, ISBNs,
order numbers, hashes, Lightning invoices and keys that are public, code.

Run ``python -m benchmarks.privacy_corpus`` to regenerate it (the same seed, the same file).
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Iterator
from pathlib import Path

import phonenumbers
from mnemonic import Mnemonic
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from stdnum import iban, luhn

OUT = Path(__file__).resolve().parents[1] / "service" / "routing" / "privacy_corpus.jsonl"
rng = random.Random(20260115)
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def pick(options: list[str]) -> str:
    return options[rng.randrange(len(options))]


def rand(chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def group(digits: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for size in sizes:
        out.append(digits[i : i + size])
        i += size
    return sep.join(out)


# -- sensitive ---------------------------------------------------------------------------------

CARD_PREFIXES = [
    ("4", 16, [4, 4, 4, 4]),
    ("4", 16, [4, 4, 4, 4]),
    ("51", 16, [4, 4, 4, 4]),
    ("55", 16, [4, 4, 4, 4]),
    ("2221", 16, [4, 4, 4, 4]),
    ("2720", 16, [4, 4, 4, 4]),
    ("34", 15, [4, 6, 5]),
    ("37", 15, [4, 6, 5]),
    ("6011", 16, [4, 4, 4, 4]),
    ("65", 16, [4, 4, 4, 4]),
    ("3530", 16, [4, 4, 4, 4]),
    ("36", 14, [4, 6, 4]),
    ("62", 16, [4, 4, 4, 4]),
    ("4", 13, [4, 4, 5]),
]
CARD_TEMPLATES = [
    "My card number is {}, expiry 09/27, please fill in the checkout form.",
    "Charge {} for the annual plan.",
    "card: {} cvv 123",
    "Can you check why payment with {} was declined?",
    "Customer record: name=J. Doe, card={}, plan=pro",
    "Use the company Amex {} for the hotel booking.",
    "{}",
    "Refund the last purchase on card {} please",
    'payment = {{"pan": "{}", "exp": "11/26"}}',
    "The test order used {} and failed at 3-D Secure.",
]


def cards() -> Iterator[tuple[str, str]]:
    for n in range(42):
        prefix, length, sizes = CARD_PREFIXES[n % len(CARD_PREFIXES)]
        body = prefix + rand(string.digits, length - len(prefix) - 1)
        number = body + luhn.calc_check_digit(body)
        sep = pick([" ", "-", "", " "])
        shown = group(number, sizes, sep) if sep else number
        yield "payment_card", pick(CARD_TEMPLATES).format(shown)


IBAN_COUNTRIES = ["DE", "GB", "FR", "ES", "IT", "NL", "BE", "AT", "CH", "PL", "SE", "IE", "PT"]
IBAN_TEMPLATES = [
    "Please wire the deposit to {}.",
    "IBAN: {} (account holder: ACME GmbH)",
    "Send the refund to my account {} before Friday.",
    "Update the supplier's bank details to {}",
    "{}",
    "beneficiary iban={} bic=DEUTDEFF",
    "Transfer 250 EUR to {} with reference INV-2291.",
]


def _bban(struct: str) -> str:
    out = []
    for count, _, kind in re.findall(r"(\d+)(!?)([nac])", struct):
        chars = {
            "n": string.digits,
            "a": string.ascii_uppercase,
            "c": string.ascii_uppercase + string.digits,
        }[kind]
        out.append(rand(chars, int(count)))
    return "".join(out)


def ibans() -> Iterator[tuple[str, str]]:
    from stdnum.iban import _ibandb  # the registry python-stdnum validates against

    made = 0
    while made < 39:
        cc = IBAN_COUNTRIES[made % len(IBAN_COUNTRIES)]
        info = _ibandb.info(cc + "00")
        struct = info[0][1]["bban"]
        for _ in range(5000):
            bban = _bban(struct)
            check = iban.calc_check_digits(cc + "00" + bban)
            number = cc + check + bban
            if iban.is_valid(number):
                break
        else:
            raise SystemExit(f"no valid IBAN for {cc}")
        shown = iban.format(number) if made % 3 else number
        yield "iban", pick(IBAN_TEMPLATES).format(shown)
        made += 1


PHONE_REGIONS = ["US", "GB", "DE", "FR", "IN", "JP", "BR", "AU", "ES", "IT", "NL", "MX", "ZA"]
INTERNATIONAL_TEMPLATES = [
    "You can reach the supplier at {}.",
    "{} is the hotline number for the Berlin office",
    "Contact person: Maria Lopez, {}",
    "Send the delivery driver a message at {} when you arrive",
    "wa.me link for {} please",
    "Emergency contact {}",
    "Dr. Patel's office: {}",
    "{}",
]
NATIONAL_TEMPLATES = [
    "Call me on {} tomorrow morning.",
    "My mobile is {}",
    "phone: {}",
    "Tel. {}",
    "Please ring {} if the parcel does not arrive.",
    "You can text me at {} any time.",
    "Contact: Anna Berg, {}",
    "my number is {}, call after six",
    "WhatsApp: {}",
    "reach me at {}",
]


def _phone(region: str, kind: PhoneNumberType) -> phonenumbers.PhoneNumber:
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None
    national = phonenumbers.national_significant_number(example)
    for _ in range(1000):
        tail = rand(string.digits, 4)
        candidate = phonenumbers.parse(national[:-4] + tail, region)
        if phonenumbers.is_valid_number(candidate):
            return candidate
    raise SystemExit(f"no valid number for {region}")


def phones() -> Iterator[tuple[str, str]]:
    for n in range(44):
        region = PHONE_REGIONS[n % len(PHONE_REGIONS)]
        kind = PhoneNumberType.MOBILE if n % 2 else PhoneNumberType.FIXED_LINE
        number = _phone(region, kind)
        if n % 3 == 0:
            shown = phonenumbers.format_number(number, PhoneNumberFormat.E164)
            yield "phone", pick(INTERNATIONAL_TEMPLATES).format(shown)
        elif n % 3 == 1:
            shown = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
            yield "phone", pick(INTERNATIONAL_TEMPLATES).format(shown)
        else:
            shown = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
            yield "phone", pick(NATIONAL_TEMPLATES).format(shown)


FIRST = ["jo", "anna", "m.keller", "li.wei", "priya", "tom_b", "s.okafor", "emma+test", "d.ruiz"]
DOMAINS = ["example.com", "mail.example.org", "acme.co.uk", "uni-bonn.de", "startup.io"]
EMAIL_TEMPLATES = [
    "Forward the contract to {}.",
    "reply-to: {}",
    "Ask {} whether the invoice was paid",
    'user = {{"name": "Sam", "email": "{}"}}',
    "The account owner is {}, reset their password",
    "{}",
    "cc {} on the thread",
]


def emails() -> Iterator[tuple[str, str]]:
    for _ in range(38):
        yield "email", pick(EMAIL_TEMPLATES).format(f"{pick(FIRST)}@{pick(DOMAINS)}")


ALNUM = string.ascii_letters + string.digits
KEY_TEMPLATES = [
    "Here is my key: {}",
    "export OPENAI_API_KEY={}",
    "Why does the request fail with Authorization: Bearer {}",
    "config.yaml has `key: {}` in it, is that a problem?",
    "{}",
    'client = Client(api_key="{}")',
]


def api_keys() -> Iterator[tuple[str, str]]:
    formats = [
        lambda: "sk-proj-" + rand(ALNUM + "_-", 48),
        lambda: "sk-or-v1-" + rand("0123456789abcdef", 64),
        lambda: "sk-ant-api03-" + rand(ALNUM + "_-", 60),
        lambda: "AKIA" + rand(string.ascii_uppercase + string.digits, 16),
        lambda: "ghp_" + rand(ALNUM, 36),
        lambda: "github_pat_" + rand(ALNUM, 22) + "_" + rand(ALNUM, 59),
        lambda: (
            "xoxb-"
            + rand(string.digits, 12)
            + "-"
            + rand(string.digits, 13)
            + "-"
            + rand(ALNUM, 24)
        ),
        lambda: "AIza" + rand(ALNUM + "_-", 35),
        lambda: "sk_live_" + rand(ALNUM, 24),
        lambda: "rk_live_" + rand(ALNUM, 24),
        lambda: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI" + rand(ALNUM, 20) + "." + rand(ALNUM + "_-", 43),
        lambda: "0201036c6e6402" + rand("0123456789abcdef", 120),  # an LND macaroon in hex
    ]
    for n in range(36):
        yield "api_key", pick(KEY_TEMPLATES).format(formats[n % len(formats)]())
    assigned = [
        'DB_PASSWORD="{}"',
        "api_key: {}",
        '{{"client_secret": "{}"}}',
        "token={}",
        "the admin password is {}".replace("is", "="),
        "SECRET_KEY = '{}'",
    ]
    for n in range(12):
        value = rand(ALNUM, rng.randrange(12, 40))
        value = value[:-1] + rng.choice(string.digits)
        yield "api_key", assigned[n % len(assigned)].format(value)


SEED_TEMPLATES = [
    "My wallet recovery words are: {}",
    "seed: {}",
    "I wrote down these words when I set up the wallet, are they a valid phrase? {}",
    "{}",
    "Restore from mnemonic {} and tell me the first address",
]


def seeds() -> Iterator[tuple[str, str]]:
    mnemonic = Mnemonic("english")
    for n in range(34):
        strength = [128, 160, 192, 256][n % 4]
        words = mnemonic.to_mnemonic(bytes(rng.randrange(256) for _ in range(strength // 8)))
        if n % 5 == 1:
            words = " ".join(f"{i}. {w}" for i, w in enumerate(words.split(), 1))
        elif n % 5 == 2:
            words = ", ".join(words.split())
        elif n % 5 == 3:
            words = "\n".join(words.split())
        yield "seed_phrase", pick(SEED_TEMPLATES).format(words)


def private_keys() -> Iterator[tuple[str, str]]:
    pem = ["RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED ", "DSA "]
    for n in range(12):
        label = pem[n % len(pem)]
        body = "\n".join(rand(ALNUM + "+/", 64) for _ in range(3))
        yield (
            "private_key",
            (
                f"Why won't ssh accept this key?\n-----BEGIN {label}PRIVATE KEY-----\n{body}\n"
                f"-----END {label}PRIVATE KEY-----"
            ),
        )
    for _ in range(8):
        yield (
            "private_key",
            pick(
                [
                    "Import the wallet from {}",
                    "xpriv backup: {}",
                    "{}",
                ]
            ).format(pick(["xprv", "tprv", "zprv"]) + rand(B58, 107)),
        )
    for _ in range(6):
        yield (
            "private_key",
            pick(["My nostr key is {}", "nsec: {}", "sign the event with {}"]).format(
                "nsec1" + rand(BECH32, 58)
            ),
        )
    for _ in range(8):
        yield (
            "private_key",
            pick(
                [
                    "private key: {}",
                    "Derive the address for private_key={}",
                    "Here's my secret key 0x{} - what is the public key?",
                    "wallet privkey {}",
                ]
            ).format(rand("0123456789abcdef", 64)),
        )


def national_ids() -> Iterator[tuple[str, str]]:
    for _ in range(10):
        ssn = (
            f"{rng.randrange(1, 665):03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"
        )
        yield (
            "national_id",
            pick(
                ["SSN {}", "my social security number is {}", "Applicant: SSN: {}, DOB 1990-04-12"]
            ).format(ssn),
        )


# -- benign look-alikes --------------------------------------------------------------------------


def benign() -> Iterator[tuple[str, str]]:
    hexd = "0123456789abcdef"
    for _ in range(14):
        y, m, d = rng.randrange(2015, 2027), rng.randrange(1, 13), rng.randrange(1, 29)
        h, mi, s = rng.randrange(24), rng.randrange(60), rng.randrange(60)
        yield (
            "date",
            pick(
                [
                    f"The meeting is on {y}-{m:02d}-{d:02d} {h:02d}:{mi:02d}",
                    f"due {d:02d}/{m:02d}/{y}",
                    f"{d:02d}.{m:02d}.{y} um {h:02d}:{mi:02d} Uhr",
                    f"Between {y}-{m:02d}-{d:02d} and {y}-{m:02d}-{d + 1:02d}",
                    f"{m}/{d}/{y} {h % 12 + 1}:{mi:02d} PM",
                ]
            ),
        )
        yield (
            "log",
            pick(
                [
                    f"{y}-{m:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{rng.randrange(1000):03d}Z INFO "
                    f"worker started in {rng.randrange(2000)} ms",
                    f"[{y}-{m:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d},{rng.randrange(1000):03d}]"
                    " ERROR connection reset by peer",
                    f"Jan {d:2d} {h:02d}:{mi:02d}:{s:02d} host sshd[{rng.randrange(99999)}]: "
                    "session opened",
                    f"{y}{m:02d}{d:02d} {h:02d}{mi:02d}{s:02d} pid={rng.randrange(1, 99999)} "
                    f"rss={rng.randrange(10**6, 10**8)}",
                    f"127.0.0.1 - - [{d:02d}/Jan/{y}:{h:02d}:{mi:02d}:{s:02d} +0000] "
                    f'"GET /v1/models HTTP/1.1" 200 {rng.randrange(100, 99999)}',
                ]
            ),
        )
    for _ in range(12):
        ip = ".".join(str(rng.randrange(256)) for _ in range(4))
        yield (
            "ip",
            pick(
                [
                    f"ping {ip}",
                    f"The server at {ip}:8080 times out",
                    f"allow from {ip}/24",
                    f"curl http://{ip}/healthz",
                    f"fe80::{rng.randrange(65535):x}:{rng.randrange(65535):x}:"
                    f"{rng.randrange(65535):x}:{rng.randrange(65535):x}%eth0",
                ]
            ),
        )
        v = [rng.randrange(30) for _ in range(4)]
        yield (
            "version",
            pick(
                [
                    f"upgrade to version {v[0]}.{v[1]}.{v[2]}",
                    f"Chrome/{v[0] + 100}.0.{rng.randrange(6000)}.{rng.randrange(200)}"
                    " Safari/537.36",
                    f"build {v[0]}.{v[1]}.{rng.randrange(10000)}.{rng.randrange(10000)}",
                    f"pip install 'pydantic>={v[1]}.{v[2]},<{v[1] + 1}'",
                    f"kernel 6.{v[1]}.{v[2]}-{rng.randrange(100)}-generic",
                ]
            ),
        )
    for _ in range(8):
        body = "978" + rand(string.digits, 9)
        check = (10 - sum((1 if i % 2 == 0 else 3) * int(c) for i, c in enumerate(body)) % 10) % 10
        isbn = f"{body[:3]}-{body[3]}-{body[4:7]}-{body[7:]}-{check}"
        yield "isbn", pick([f"ISBN {isbn}", f"the book (ISBN-13: {isbn}) is out of print"])
    for _ in range(16):
        yield (
            "order",
            pick(
                [
                    f"order number {rand(string.digits, 10)} shipped",
                    f"invoice INV-{rng.randrange(2019, 2027)}-{rand(string.digits, 6)} is overdue",
                    f"Tracking: 1Z{rand(string.ascii_uppercase + string.digits, 16)}",
                    f"PO #{rand(string.digits, 8)}, line 3",
                    f"ticket JIRA-{rng.randrange(99999)} blocks the release",
                    f"order {rand(string.digits, 16)} (our internal id, not a card)",
                    f"SKU {rand(string.digits, 13)} out of stock",
                    f"customer id {rand(string.digits, 12)} churned",
                ]
            ),
        )
    for _ in range(14):
        yield (
            "hash",
            pick(
                [
                    f"sha256 {rand(hexd, 64)}",
                    f"commit {rand(hexd, 40)}",
                    f"md5sum: {rand(hexd, 32)}",
                    f"payment_hash {rand(hexd, 64)} settled",
                    f"txid {rand(hexd, 64)} has 3 confirmations",
                    f"node pubkey 02{rand(hexd, 64)}",
                    f'ETag: "{rand(hexd, 32)}"',
                ]
            ),
        )
        u = rand(hexd, 32)
        yield (
            "uuid",
            pick(
                [
                    f"request id {u[:8]}-{u[8:12]}-4{u[13:16]}-a{u[17:20]}-{u[20:]}",
                    f"task_{u[:24]} is reconciled",
                ]
            ),
        )
    for _ in range(10):
        yield (
            "timestamp",
            pick(
                [
                    f"created_at {rng.randrange(1_500_000_000_000, 1_800_000_000_000)}",
                    f"epoch seconds: {rng.randrange(1_500_000_000, 1_800_000_000)}",
                    f'"ts": {rng.randrange(1_500_000_000_000_000, 1_800_000_000_000_000)}',
                    f"nonce={rng.randrange(10**15, 10**16)}",
                ]
            ),
        )
        yield (
            "price",
            pick(
                [
                    f"the total is {rng.randrange(10**6)}.{rng.randrange(100):02d} EUR",
                    f"$ {rng.randrange(10**7):,}.{rng.randrange(100):02d}",
                    f"{rng.randrange(10**9):,} sats",
                    f"1 BTC = {rng.randrange(20000, 120000)} USD",
                    f"msat {rng.randrange(10**12, 10**13)}",
                ]
            ),
        )
        yield (
            "coordinates",
            pick(
                [
                    f"coordinates {rng.uniform(-90, 90):.4f}, {rng.uniform(-180, 180):.4f}",
                    f"geo:{rng.uniform(-90, 90):.6f},{rng.uniform(-180, 180):.6f}",
                    f"lat={rng.uniform(-90, 90):.5f} lon={rng.uniform(-180, 180):.5f}",
                ]
            ),
        )
    code = [
        "password = os.environ['DB_PASSWORD']",
        "api_key = settings.openrouter_api_key.get_secret_value()",
        "token = request.headers['Authorization'].removeprefix('Bearer ')",
        'OPENAI_API_KEY="your-api-key-here"',
        "export API_KEY=<YOUR_KEY>",
        "if not token: raise Unauthorized()",
        "def luhn(number: str) -> bool: ...",
        "for i in range(1000000000): total += i * 31337",
        "SELECT id, email FROM users WHERE created_at > '2024-01-15 10:30';",
        "const phone = document.querySelector('#phone').value;",
        "git clone git@github.com:lightningnetwork/lnd.git",
        '<img src="icon@2x.png">',
        "@app.route('/v1/tasks', methods=['POST'])",
        "pip install scikit-learn; see sk-learn-tutorial-part-2024",
        "max_tokens: 4096",
        "secret_key_base: <%= ENV['SECRET_KEY_BASE'] %>",
        "x = 0x7fffffffffffffff",
        "retry after 1500 ms, backoff 2.5",
        "assert crc32(b'abc') == 891568578",
        "matrix = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]",
        "The -----BEGIN CERTIFICATE----- block goes in tls.cert",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + rand(ALNUM, 43) + " me@laptop",
        "npm i @types/node@20.11.5",
        "Run `docker run -p 8080:8080 satrouter:0.1.0`",
        "lnbc" + rand(string.digits, 4) + "n1p" + rand(BECH32, 200),
        "bc1q" + rand(BECH32, 38),
        "Send sats to 1" + rand(B58, 33),
        "public key: 03" + rand(hexd, 64),
        "the access token expires in 3600 seconds",
        "password: (see the vault)",
    ]
    for text in code:
        yield "code", text
    prose = [
        "What is the capital of France?",
        "Summarise this paragraph about the history of the printing press.",
        "Abandon ship! The crew left the boat in the middle of the ocean.",
        "abandon ability able about above absent absorb abstract absurd abuse access accident",
        "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo",
        "Call me when the build finishes, it takes about 10 minutes.",
        "My phone broke, can you recommend a new one under 300 dollars?",
        "Our mobile app crashes on iOS 17.2.1 at launch",
        "Dial-up modems ran at 56 kbit/s.",
        "The meeting is at 10:30 in room 4",
        "Chapter 12, verses 1-14",
        "Rank the top 10 cities by population: 37,400,068 and so on",
        "Please text me the summary in 3 bullet points",
        "the number 1234567890 is a classic test value",
        "Reach out to the team before 5 pm",
        "Email the draft to the client when ready",
        "She scored 1600 on the SAT in 2019",
        "Call option strike 4500, expiry 2025-03-21",
        "Contact sales for the enterprise plan",
        "Fax machines are still used in hospitals",
        "Apollo 11 landed on 20 July 1969 at 20:17 UTC",
        "pi is 3.14159265358979323846",
        "The zip code 94105 is in San Francisco",
        "Write a haiku about autumn leaves",
        "Convert 5 miles to kilometres",
        "private key management best practices for a small team",
        "How do I rotate an API key without downtime?",
        "What does 'seed phrase' mean in a Bitcoin wallet?",
        "Explain IBAN check digits with an example structure like DEkk bbbb bbbb cccc cccc cc",
        "Card numbers are 16 digits and use the Luhn algorithm, explain it",
    ]
    for text in prose:
        yield "prose", text


def main() -> None:
    lines = []
    sources = [cards, ibans, phones, emails, api_keys, seeds, private_keys, national_ids]
    for source in sources:
        for n, (kind, text) in enumerate(source()):
            lines.append({"id": f"{kind}-{n:03d}", "group": kind, "text": text, "kinds": [kind]})
    counts: dict[str, int] = {}
    for group_name, text in benign():
        counts[group_name] = counts.get(group_name, 0) + 1
        lines.append(
            {
                "id": f"benign-{group_name}-{counts[group_name]:03d}",
                "group": group_name,
                "text": text,
                "kinds": [],
            }
        )
    OUT.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    print(f"{len(lines)} strings written to {OUT}")


if __name__ == "__main__":
    main()
