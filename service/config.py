"""Settings: the environment, or a TOML file named by ``SATROUTER_CONFIG``.

Every setting has one environment name (as the README lists them). The TOML file may use that
name or the short field name (``port = 8080`` or ``SATROUTER_PORT = 8080``). Environment
variables win over the file. Unknown settings stop start-up: a typo in ``SATROUTER_PORTT``
must not silently fall back to a default.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"

#: Prefixes that mark an environment variable as one of ours.
_OWN_PREFIXES = ("SATROUTER_", "OPENROUTER_", "LNBITS_", "LND_")


class ConfigError(Exception):
    """A setting is unknown or invalid; the message names it."""


class Settings(BaseSettings):
    """All of satrouter's settings. Secrets are ``SecretStr`` so they never print."""

    model_config = SettingsConfigDict(
        extra="forbid", case_sensitive=False, populate_by_name=True, frozen=True
    )

    database_url: str = Field(
        "sqlite:///var/satrouter.db",
        validation_alias=AliasChoices("database_url", "SATROUTER_DATABASE_URL"),
    )
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("host", "SATROUTER_HOST"))
    port: int = Field(8080, ge=0, le=65535, validation_alias=AliasChoices("port", "SATROUTER_PORT"))
    admin_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("admin_token", "SATROUTER_ADMIN_TOKEN")
    )

    # OpenRouter
    openrouter_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("openrouter_api_key", "OPENROUTER_API_KEY")
    )
    openrouter_base_url: str = Field(
        DEFAULT_OPENROUTER_BASE_URL,
        validation_alias=AliasChoices("openrouter_base_url", "OPENROUTER_BASE_URL"),
    )
    openrouter_management_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("openrouter_management_key", "OPENROUTER_MANAGEMENT_KEY"),
    )
    openrouter_referer: str = Field(
        "https://satrouter.invalid",
        validation_alias=AliasChoices("openrouter_referer", "OPENROUTER_REFERER"),
    )
    openrouter_title: str = Field(
        "satrouter", validation_alias=AliasChoices("openrouter_title", "OPENROUTER_TITLE")
    )
    openrouter_timeout: float = Field(
        120.0, gt=0, validation_alias=AliasChoices("openrouter_timeout", "OPENROUTER_TIMEOUT")
    )
    catalog_ttl: float = Field(
        3600.0, gt=0, validation_alias=AliasChoices("catalog_ttl", "SATROUTER_CATALOG_TTL")
    )
    catalog_cache: Path = Field(
        Path("var/models.json"),
        validation_alias=AliasChoices("catalog_cache", "SATROUTER_CATALOG_CACHE"),
    )

    # Lightning
    lightning: Literal["lnbits", "lnd"] = Field(
        "lnbits", validation_alias=AliasChoices("lightning", "SATROUTER_LIGHTNING")
    )
    lnbits_url: str | None = Field(None, validation_alias=AliasChoices("lnbits_url", "LNBITS_URL"))
    lnbits_admin_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("lnbits_admin_key", "LNBITS_ADMIN_KEY")
    )
    lnbits_invoice_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("lnbits_invoice_key", "LNBITS_INVOICE_KEY")
    )
    lnd_grpc_host: str | None = Field(
        None, validation_alias=AliasChoices("lnd_grpc_host", "LND_GRPC_HOST")
    )
    lnd_tls_cert: Path | None = Field(
        None, validation_alias=AliasChoices("lnd_tls_cert", "LND_TLS_CERT")
    )
    lnd_macaroon: Path | None = Field(
        None, validation_alias=AliasChoices("lnd_macaroon", "LND_MACAROON")
    )

    audit_content: bool = Field(
        False, validation_alias=AliasChoices("audit_content", "SATROUTER_AUDIT_CONTENT")
    )

    # Operator: balance watching and spend alerts
    balance_interval: float = Field(
        60.0, gt=0, validation_alias=AliasChoices("balance_interval", "SATROUTER_BALANCE_INTERVAL")
    )
    alert_webhook_url: str | None = Field(
        None, validation_alias=AliasChoices("alert_webhook_url", "SATROUTER_ALERT_WEBHOOK_URL")
    )
    alert_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("alert_secret", "SATROUTER_ALERT_SECRET")
    )
    alert_daily_spend_usd: Decimal | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("alert_daily_spend_usd", "SATROUTER_ALERT_DAILY_SPEND_USD"),
    )
    alert_agent_daily_spend_sat: int | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices(
            "alert_agent_daily_spend_sat", "SATROUTER_ALERT_AGENT_DAILY_SPEND_SAT"
        ),
    )
    alert_min_margin_pct: Decimal | None = Field(
        None,
        validation_alias=AliasChoices("alert_min_margin_pct", "SATROUTER_ALERT_MIN_MARGIN_PCT"),
    )
    alert_min_runway_hours: Decimal | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("alert_min_runway_hours", "SATROUTER_ALERT_MIN_RUNWAY_HOURS"),
    )
    alert_max_discrepancy_pct: Decimal | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices(
            "alert_max_discrepancy_pct", "SATROUTER_ALERT_MAX_DISCREPANCY_PCT"
        ),
    )

    policy: Path | None = Field(None, validation_alias=AliasChoices("policy", "SATROUTER_POLICY"))

    # Budgets: caps on spend, global and per agent (dollars: OpenRouter cost; sats: charges)
    budget_daily_usd: Decimal | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("budget_daily_usd", "SATROUTER_BUDGET_DAILY_USD"),
    )
    budget_daily_sat: int | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("budget_daily_sat", "SATROUTER_BUDGET_DAILY_SAT"),
    )
    budget_monthly_usd: Decimal | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("budget_monthly_usd", "SATROUTER_BUDGET_MONTHLY_USD"),
    )
    budget_monthly_sat: int | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("budget_monthly_sat", "SATROUTER_BUDGET_MONTHLY_SAT"),
    )
    budget_agent_daily_usd: Decimal | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("budget_agent_daily_usd", "SATROUTER_BUDGET_AGENT_DAILY_USD"),
    )
    budget_agent_daily_sat: int | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("budget_agent_daily_sat", "SATROUTER_BUDGET_AGENT_DAILY_SAT"),
    )
    budget_agent_monthly_usd: Decimal | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices(
            "budget_agent_monthly_usd", "SATROUTER_BUDGET_AGENT_MONTHLY_USD"
        ),
    )
    budget_agent_monthly_sat: int | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices(
            "budget_agent_monthly_sat", "SATROUTER_BUDGET_AGENT_MONTHLY_SAT"
        ),
    )
    budget_reset_hour: int = Field(
        0,
        ge=0,
        le=23,
        validation_alias=AliasChoices("budget_reset_hour", "SATROUTER_BUDGET_RESET_HOUR"),
    )
    budget_time_zone: str = Field(
        "UTC", validation_alias=AliasChoices("budget_time_zone", "SATROUTER_BUDGET_TIME_ZONE")
    )

    @field_validator("budget_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    # Top-ups from earnings
    topup_executor: Literal["off", "manual", "command", "lightning-invoice"] = Field(
        "off", validation_alias=AliasChoices("topup_executor", "SATROUTER_TOPUP_EXECUTOR")
    )
    topup_floor_usd: Decimal = Field(
        Decimal(5),
        gt=0,
        validation_alias=AliasChoices("topup_floor_usd", "SATROUTER_TOPUP_FLOOR_USD"),
    )
    topup_target_runway_hours: Decimal = Field(
        Decimal(72),
        gt=0,
        validation_alias=AliasChoices(
            "topup_target_runway_hours", "SATROUTER_TOPUP_TARGET_RUNWAY_HOURS"
        ),
    )
    topup_daily_cap_usd: Decimal | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("topup_daily_cap_usd", "SATROUTER_TOPUP_DAILY_CAP_USD"),
    )
    topup_monthly_cap_usd: Decimal | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("topup_monthly_cap_usd", "SATROUTER_TOPUP_MONTHLY_CAP_USD"),
    )
    topup_command: str | None = Field(
        None, validation_alias=AliasChoices("topup_command", "SATROUTER_TOPUP_COMMAND")
    )
    topup_invoice_url: str | None = Field(
        None, validation_alias=AliasChoices("topup_invoice_url", "SATROUTER_TOPUP_INVOICE_URL")
    )
    topup_interval: float = Field(
        60.0, gt=0, validation_alias=AliasChoices("topup_interval", "SATROUTER_TOPUP_INTERVAL")
    )

    # Money
    btc_usd: Decimal | None = Field(
        None, gt=0, validation_alias=AliasChoices("btc_usd", "SATROUTER_BTC_USD")
    )
    rate_max_age: float = Field(
        600.0, gt=0, validation_alias=AliasChoices("rate_max_age", "SATROUTER_RATE_MAX_AGE")
    )
    markup_bps: int = Field(
        2000, ge=0, le=100_000, validation_alias=AliasChoices("markup_bps", "SATROUTER_MARKUP_BPS")
    )
    fee_msat: int = Field(
        1000, ge=0, validation_alias=AliasChoices("fee_msat", "SATROUTER_FEE_MSAT")
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
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


def load_settings(**overrides: Any) -> Settings:
    """Load settings or raise :class:`ConfigError` naming every bad setting."""
    known = _known_env_names()
    unknown = sorted(
        name
        for name in os.environ
        if name.upper().startswith(_OWN_PREFIXES) and name.upper() not in known
    )
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
