"""Settings: the environment, or a TOML file named by ``SATROUTER_CONFIG``.

Every setting has one environment name (as the README lists them). The TOML file may use that
name or the short field name (``port = 8080`` or ``SATROUTER_PORT = 8080``). Environment
variables win over the file. Unknown settings stop start-up: a typo in ``SATROUTER_PORTT``
must not silently fall back to a default.

Two kinds of foreign variables are ignored, with one warning each: Kubernetes' service links
(for a Service named ``satrouter``: ``SATROUTER_PORT=tcp://10.0.0.1:8080``,
``SATROUTER_SERVICE_HOST``, ``SATROUTER_PORT_8080_TCP_ADDR``...) and other programs' variables
that share a prefix with ours (``LNBITS_DATA_FOLDER`` from an env file shared with LNbits).
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from limits import parse
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
#: An absolute http(s) URL with a host, no query or fragment.
HTTP_URL = r"^https?://[^/?#\s]+(/[^?#\s]*)?$"

log = logging.getLogger(__name__)

#: Prefixes that mark an environment variable as one of ours.
_OWN_PREFIXES = ("SATROUTER_", "OPENROUTER_", "LNBITS_", "LND_")
#: Prefixes other programs use too (LNbits reads dozens of ``LNBITS_*``): names we do not read
#: are theirs, unless they are one letter or two away from one of ours (a typo).
_SHARED_PREFIXES = ("LNBITS_",)
#: Kubernetes service-link variables: ``<SVC>_SERVICE_HOST``, ``<SVC>_SERVICE_PORT[_<NAME>]``,
#: ``<SVC>_PORT_<n>_<PROTO>[_ADDR|_PORT|_PROTO]``, and ``<SVC>_PORT`` holding ``tcp://ip:port``.
_SERVICE_LINK_NAME = re.compile(
    r"^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_(ADDR|PORT|PROTO))?)$"
)
_SERVICE_LINK_VALUE = re.compile(r"^(tcp|udp|sctp)://[^\s/]+:\d+$")
#: The shortest admin (and metrics) token accepted: 16 characters, about 96 bits if random.
MIN_TOKEN_LENGTH = 16


class ConfigError(Exception):
    """A setting is unknown or invalid; the message names it."""


def _env(name: str, default: Any, **constraints: Any) -> Any:
    """A setting read from the environment variable ``name`` (or, in the TOML file, ``name`` or
    its short form: without ``SATROUTER_``, in lower case)."""
    short = name.removeprefix("SATROUTER_").lower()
    return Field(default, validation_alias=AliasChoices(short, name), **constraints)


class Settings(BaseSettings):
    """All of satrouter's settings. Secrets are ``SecretStr`` so they never print."""

    model_config = SettingsConfigDict(
        extra="forbid", case_sensitive=False, populate_by_name=True, frozen=True
    )

    database_url: str = _env("SATROUTER_DATABASE_URL", "sqlite:///var/satrouter.db")
    host: str = _env("SATROUTER_HOST", "127.0.0.1")
    #: The URL agents reach the service at (agent card, Nostr announcement); unset, the card
    #: names the origin each request came to.
    public_url: str | None = _env("SATROUTER_PUBLIC_URL", None, pattern=HTTP_URL)
    port: int = _env("SATROUTER_PORT", 8080, ge=0, le=65535)
    admin_token: SecretStr | None = _env("SATROUTER_ADMIN_TOKEN", None)
    #: Signs `satrouter announce` (nsec1... or hex); read by that command alone.
    nostr_key: SecretStr | None = _env("SATROUTER_NOSTR_KEY", None)

    # The operator's surface. /metrics tells revenue, cost and the OpenRouter balance: it is
    # served on its own listener (loopback by default; "off" for none) and, with a token, on
    # the main port too, behind that bearer token.
    metrics_token: SecretStr | None = _env("SATROUTER_METRICS_TOKEN", None)
    metrics_host: str = _env("SATROUTER_METRICS_HOST", "127.0.0.1")
    metrics_port: int | None = _env("SATROUTER_METRICS_PORT", 9464, ge=0, le=65535)
    log_format: Literal["text", "json"] = _env("SATROUTER_LOG_FORMAT", "text")

    @field_validator("admin_token", "metrics_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty token (compose passes "" for a missing .env entry) once matched an empty
        # "Authorization: Bearer": refuse it and short ones; unset turns the routes off.
        if value is not None and len(value.get_secret_value().strip()) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"must be at least {MIN_TOKEN_LENGTH} characters (leave it unset to turn the "
                "routes it guards off)"
            )
        return value

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _metrics_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
            return None
        return value

    # OpenRouter
    openrouter_api_key: SecretStr | None = _env("OPENROUTER_API_KEY", None)
    openrouter_base_url: str = _env("OPENROUTER_BASE_URL", DEFAULT_OPENROUTER_BASE_URL)
    openrouter_management_key: SecretStr | None = _env("OPENROUTER_MANAGEMENT_KEY", None)
    openrouter_referer: str = _env("OPENROUTER_REFERER", "https://satrouter.invalid")
    openrouter_title: str = _env("OPENROUTER_TITLE", "satrouter")
    openrouter_timeout: float = _env("OPENROUTER_TIMEOUT", 120.0, gt=0)
    catalog_ttl: float = _env("SATROUTER_CATALOG_TTL", 3600.0, gt=0)
    catalog_cache: Path = _env("SATROUTER_CATALOG_CACHE", Path("var/models.json"))

    # Lightning
    lightning: Literal["lnbits", "lnd"] = _env("SATROUTER_LIGHTNING", "lnbits")
    lnbits_url: str | None = _env("LNBITS_URL", None)
    lnbits_admin_key: SecretStr | None = _env("LNBITS_ADMIN_KEY", None)
    lnbits_invoice_key: SecretStr | None = _env("LNBITS_INVOICE_KEY", None)
    lnd_grpc_host: str | None = _env("LND_GRPC_HOST", None)
    lnd_tls_cert: Path | None = _env("LND_TLS_CERT", None)
    lnd_macaroon: Path | None = _env("LND_MACAROON", None)
    lnbits_timeout: float = _env("LNBITS_TIMEOUT", 30.0, gt=0)
    # Withdrawals: how long a request waits for the payment's outcome before answering 202
    # pending, and how long after the hand-over a payment the backend has no record of counts
    # as never sent (then refunded).
    payout_patience: float = _env("SATROUTER_PAYOUT_PATIENCE", 30.0, gt=0)
    payout_absent_after: float = _env("SATROUTER_PAYOUT_ABSENT_AFTER", 120.0, gt=0)

    audit_content: bool = _env("SATROUTER_AUDIT_CONTENT", False)
    #: Let callbacks reach loopback and private addresses (tests, demos, agents on the
    #: operator's own network); off, only public addresses receive them.
    callback_allow_private: bool = _env("SATROUTER_CALLBACK_ALLOW_PRIVATE", False)

    # Operator: balance watching and spend alerts
    balance_interval: float = _env("SATROUTER_BALANCE_INTERVAL", 60.0, gt=0)
    #: How far the wallet and the OpenRouter credits may stray from the books (beyond what is
    #: in flight) before the books are said not to match the world.
    books_wallet_tolerance_sat: int = _env("SATROUTER_BOOKS_WALLET_TOLERANCE_SAT", 10, ge=0)
    books_credits_tolerance_usd: Decimal = _env(
        "SATROUTER_BOOKS_CREDITS_TOLERANCE_USD", Decimal("0.01"), ge=0
    )
    alert_webhook_url: str | None = _env("SATROUTER_ALERT_WEBHOOK_URL", None)
    alert_secret: SecretStr | None = _env("SATROUTER_ALERT_SECRET", None)
    alert_daily_spend_usd: Decimal | None = _env("SATROUTER_ALERT_DAILY_SPEND_USD", None, gt=0)
    alert_agent_daily_spend_sat: int | None = _env(
        "SATROUTER_ALERT_AGENT_DAILY_SPEND_SAT", None, gt=0
    )
    alert_min_margin_pct: Decimal | None = _env("SATROUTER_ALERT_MIN_MARGIN_PCT", None)
    alert_min_runway_hours: Decimal | None = _env("SATROUTER_ALERT_MIN_RUNWAY_HOURS", None, gt=0)
    alert_max_discrepancy_pct: Decimal | None = _env(
        "SATROUTER_ALERT_MAX_DISCREPANCY_PCT", None, gt=0
    )

    policy: Path | None = _env("SATROUTER_POLICY", None)
    local_url: str | None = _env("SATROUTER_LOCAL_URL", None)  # OpenAI-compatible, e.g. Ollama
    #: What a prompt with sensitive content does: ``local``, ``refuse``, ``zdr`` or ``off``
    #: (unset: ``local`` with a local endpoint, else ``refuse``). docs/routing.md.
    privacy_mode: Literal["local", "refuse", "zdr", "off"] | None = _env(
        "SATROUTER_PRIVACY_MODE", None
    )

    @model_validator(mode="after")
    def _local_needs_an_endpoint(self) -> Settings:
        if self.privacy_mode == "local" and not self.local_url:
            raise ValueError("SATROUTER_PRIVACY_MODE=local needs SATROUTER_LOCAL_URL")
        return self

    # Budgets: caps on spend, global and per agent (dollars: OpenRouter cost; sats: charges)
    budget_daily_usd: Decimal | None = _env("SATROUTER_BUDGET_DAILY_USD", None, gt=0)
    budget_daily_sat: int | None = _env("SATROUTER_BUDGET_DAILY_SAT", None, gt=0)
    budget_monthly_usd: Decimal | None = _env("SATROUTER_BUDGET_MONTHLY_USD", None, gt=0)
    budget_monthly_sat: int | None = _env("SATROUTER_BUDGET_MONTHLY_SAT", None, gt=0)
    budget_agent_daily_usd: Decimal | None = _env("SATROUTER_BUDGET_AGENT_DAILY_USD", None, gt=0)
    budget_agent_daily_sat: int | None = _env("SATROUTER_BUDGET_AGENT_DAILY_SAT", None, gt=0)
    budget_agent_monthly_usd: Decimal | None = _env(
        "SATROUTER_BUDGET_AGENT_MONTHLY_USD", None, gt=0
    )
    budget_agent_monthly_sat: int | None = _env("SATROUTER_BUDGET_AGENT_MONTHLY_SAT", None, gt=0)
    budget_reset_hour: int = _env("SATROUTER_BUDGET_RESET_HOUR", 0, ge=0, le=23)
    budget_time_zone: str = _env("SATROUTER_BUDGET_TIME_ZONE", "UTC")

    @field_validator("budget_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    # Limits on abuse (``limits`` notation, e.g. "60/minute"; "off" switches one off)
    limit_invoices_per_address: str = _env("SATROUTER_LIMIT_INVOICES_PER_ADDRESS", "60/minute")
    limit_invoices_total: str = _env("SATROUTER_LIMIT_INVOICES_TOTAL", "600/minute")
    limit_accounts_per_address: str = _env("SATROUTER_LIMIT_ACCOUNTS_PER_ADDRESS", "30/hour")
    limit_writes_per_credential: str = _env("SATROUTER_LIMIT_WRITES_PER_CREDENTIAL", "3000/minute")
    limit_payouts_per_credential: str = _env("SATROUTER_LIMIT_PAYOUTS_PER_CREDENTIAL", "60/minute")
    limit_redeems_per_address: str = _env("SATROUTER_LIMIT_REDEEMS_PER_ADDRESS", "30/minute")
    #: Proxies whose X-Forwarded-For is believed (comma-separated addresses or networks).
    trusted_proxies: str = _env("SATROUTER_TRUSTED_PROXIES", "")
    #: How long expired, unpaid invoices, challenges and tasks are kept before they are pruned.
    unpaid_retention: float = _env("SATROUTER_UNPAID_RETENTION", 3600.0, ge=0)
    # Running work is leased to its replica for this long and renewed every third of it; a
    # dead replica's work is taken over (failed and refunded) once its lease runs out.
    lease_seconds: float = _env("SATROUTER_LEASE_SECONDS", 30.0, ge=1, le=3600)
    #: Seconds between the sweeps that pick up paid and completed tasks nobody holds and
    #: expire unpaid invoices (unset: 1). Moves reach every replica at once through the
    #: store's notes; the sweep is the safety net behind them.
    sweep_seconds: float | None = _env("SATROUTER_SWEEP_SECONDS", None, ge=0.05, le=3600)
    #: Background task runs (``/v1/tasks``) one replica makes at once (unset: 64); paid
    #: tasks past it wait, or are run by another replica that hears of them.
    max_concurrent_runs: int | None = _env("SATROUTER_MAX_CONCURRENT_RUNS", None, ge=1, le=10_000)
    #: This replica's name on its leases, before each process's pid and a random part
    #: (unset: the host name).
    replica_id: str | None = _env("SATROUTER_REPLICA_ID", None, min_length=1, max_length=200)

    @field_validator(
        "limit_invoices_per_address",
        "limit_invoices_total",
        "limit_accounts_per_address",
        "limit_writes_per_credential",
        "limit_payouts_per_credential",
        "limit_redeems_per_address",
    )
    @classmethod
    def _a_rate(cls, value: str) -> str:
        if value != "off":
            try:
                parse(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a rate like 60/minute, or off") from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            ipaddress.ip_network(part, strict=False)  # a ValueError names the bad one
        return value

    # Cashu ecash (RIP-01). The mints whose tokens are taken (comma-separated URLs, exactly as
    # tokens name them); none: ecash is refused. The wallet runs in the interpreter that has
    # the PyPI ``cashu`` package (see docs/dependencies.md); its proofs are kept under the dir.
    cashu_mints: str = _env("SATROUTER_CASHU_MINTS", "")
    cashu_python: str = _env("SATROUTER_CASHU_PYTHON", ".venv-cashu/bin/python")
    cashu_dir: Path = _env("SATROUTER_CASHU_DIR", Path("var/cashu"))
    cashu_timeout: float = _env("SATROUTER_CASHU_TIMEOUT", 60.0, gt=0)

    @field_validator("cashu_mints")
    @classmethod
    def _mint_urls(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            if not part.startswith(("https://", "http://")):
                raise ValueError(f"{part!r} is not a mint URL")
        return value

    @property
    def cashu_mint_list(self) -> tuple[str, ...]:
        return tuple(filter(None, (p.strip() for p in self.cashu_mints.split(","))))

    # Top-ups from earnings
    topup_executor: Literal["off", "manual", "command", "lightning-invoice"] = _env(
        "SATROUTER_TOPUP_EXECUTOR", "off"
    )
    topup_floor_usd: Decimal = _env("SATROUTER_TOPUP_FLOOR_USD", Decimal(5), gt=0)
    topup_target_runway_hours: Decimal = _env(
        "SATROUTER_TOPUP_TARGET_RUNWAY_HOURS", Decimal(72), gt=0
    )
    topup_daily_cap_usd: Decimal | None = _env("SATROUTER_TOPUP_DAILY_CAP_USD", None, gt=0)
    topup_monthly_cap_usd: Decimal | None = _env("SATROUTER_TOPUP_MONTHLY_CAP_USD", None, gt=0)
    topup_command: str | None = _env("SATROUTER_TOPUP_COMMAND", None)
    topup_invoice_url: str | None = _env("SATROUTER_TOPUP_INVOICE_URL", None)
    topup_interval: float = _env("SATROUTER_TOPUP_INTERVAL", 60.0, gt=0)

    # Money
    btc_usd: Decimal | None = _env("SATROUTER_BTC_USD", None, gt=0)
    rate_max_age: float = _env("SATROUTER_RATE_MAX_AGE", 600.0, gt=0)
    markup_bps: int = _env("SATROUTER_MARKUP_BPS", 2000, ge=0, le=100_000)
    fee_msat: int = _env("SATROUTER_FEE_MSAT", 1000, ge=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, _OwnEnvironment(settings_cls)]
        config_file = os.environ.get("SATROUTER_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def _known_env_names() -> set[str]:
    names = {"SATROUTER_CONFIG"}
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(c).upper() for c in alias.choices if str(c).isupper())
    return names


def foreign_variable(name: str, value: str | None, known: set[str]) -> str | None:
    """What an environment variable with one of our prefixes is if it is not satrouter's (it is
    then ignored), or None: ours, or a misspelling of ours."""
    upper = name.upper()
    if not upper.startswith(_OWN_PREFIXES):
        return None
    if upper.endswith("_PORT") and _SERVICE_LINK_VALUE.match((value or "").strip()):
        return "a Kubernetes service link"
    if upper in known:
        return None
    if _SERVICE_LINK_NAME.match(upper):
        return "a Kubernetes service link"
    if upper.startswith(_SHARED_PREFIXES):
        ours = [k for k in known if k.startswith(_SHARED_PREFIXES)]
        if not difflib.get_close_matches(upper, ours, n=1, cutoff=0.9):
            return "another program's variable"
    return None


class _OwnEnvironment(EnvSettingsSource):
    """The environment without the variables :func:`foreign_variable` sets aside."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        known = _known_env_names()
        return {
            name: value
            for name, value in super()._load_env_vars().items()
            if foreign_variable(name, value, known) is None
        }


_warned: set[str] = set()


def load_settings(**overrides: Any) -> Settings:
    """Load settings or raise :class:`ConfigError` naming every bad setting."""
    known = _known_env_names()
    unknown = []
    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith(_OWN_PREFIXES):
            continue
        foreign = foreign_variable(name, value, known)
        if foreign is not None:
            if name not in _warned:  # once per process, though settings load more than once
                _warned.add(name)
                log.warning("ignoring %s: %s, not a satrouter setting", name, foreign)
        elif name.upper() not in known:
            unknown.append(name)
    if unknown:
        raise ConfigError(f"unknown setting(s) in the environment: {', '.join(unknown)}")
    config_file = os.environ.get("SATROUTER_CONFIG")
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"SATROUTER_CONFIG names a file that does not exist: {config_file}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            problems.append(f"{_display_name(name)}: {err['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"cannot read settings from {config_file}: {exc}") from None


def _display_name(name: str) -> str:
    """The environment name of a field, so the message matches what the operator typed."""
    field = Settings.model_fields.get(name)
    if field is not None and isinstance(field.validation_alias, AliasChoices):
        for choice in field.validation_alias.choices:
            if str(choice).isupper():
                return str(choice)
    return name
