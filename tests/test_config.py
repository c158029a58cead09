"""Settings: environment and TOML, unknown or invalid settings named at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("SATROUTER_", "OPENROUTER_", "LNBITS_", "LND_")):
            monkeypatch.delenv(name)


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATROUTER_PORT", "9001")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-secret")
    monkeypatch.setenv("SATROUTER_BTC_USD", "97000.50")
    settings = load_settings()
    assert settings.port == 9001
    assert settings.openrouter_base_url == "https://openrouter.ai/api/v1"
    assert settings.openrouter_api_key is not None
    assert settings.openrouter_api_key.get_secret_value() == "sk-or-secret"
    assert "sk-or-secret" not in repr(settings)
    assert str(settings.btc_usd) == "97000.50"


def test_unknown_environment_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATROUTER_PORTT", "1")
    with pytest.raises(ConfigError, match="SATROUTER_PORTT"):
        load_settings()


def test_invalid_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATROUTER_PORT", "eighty")
    with pytest.raises(ConfigError, match="SATROUTER_PORT"):
        load_settings()
    monkeypatch.setenv("SATROUTER_PORT", "80")
    monkeypatch.setenv("SATROUTER_LIGHTNING", "paypal")
    with pytest.raises(ConfigError, match="SATROUTER_LIGHTNING"):
        load_settings()


def test_toml_file_with_environment_winning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "satrouter.toml"
    config.write_text('port = 7000\nSATROUTER_HOST = "0.0.0.0"\nlnbits_url = "http://x"\n')
    monkeypatch.setenv("SATROUTER_CONFIG", str(config))
    settings = load_settings()
    assert (settings.port, settings.host, settings.lnbits_url) == (7000, "0.0.0.0", "http://x")
    monkeypatch.setenv("SATROUTER_PORT", "7001")
    assert load_settings().port == 7001


def test_unknown_key_in_toml_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "satrouter.toml"
    config.write_text("prot = 7000\n")
    monkeypatch.setenv("SATROUTER_CONFIG", str(config))
    with pytest.raises(ConfigError, match="prot"):
        load_settings()


def test_missing_or_malformed_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SATROUTER_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1\n")
    monkeypatch.setenv("SATROUTER_CONFIG", str(bad))
    with pytest.raises(ConfigError, match="bad.toml"):
        load_settings()


def test_cli_refuses_to_start_on_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    monkeypatch.setenv("SATROUTER_PORTT", "1")
    assert main(["demo"]) == 2
    assert "SATROUTER_PORTT" in capsys.readouterr().err


def test_the_example_config_in_deploy_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[1] / "deploy" / "satrouter.example.toml"
    monkeypatch.setenv("SATROUTER_CONFIG", str(example))
    settings = load_settings()
    assert settings.lightning == "lnbits"
    assert settings.markup_bps == 2000


def test_privacy_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().privacy_mode is None  # local with a local endpoint, else refuse
    monkeypatch.setenv("SATROUTER_PRIVACY_MODE", "zdr")
    assert load_settings().privacy_mode == "zdr"
    monkeypatch.setenv("SATROUTER_PRIVACY_MODE", "cloud")
    with pytest.raises(ConfigError, match="SATROUTER_PRIVACY_MODE"):
        load_settings()
    monkeypatch.setenv("SATROUTER_PRIVACY_MODE", "local")
    with pytest.raises(ConfigError, match="SATROUTER_PRIVACY_MODE=local needs SATROUTER_LOCAL_URL"):
        load_settings()
    monkeypatch.setenv("SATROUTER_LOCAL_URL", "http://127.0.0.1:11434/v1")
    assert load_settings().privacy_mode == "local"


KUBERNETES_SERVICE_LINKS = {
    # What Kubernetes injects for a Service named satrouter (and one named satrouter-metrics)
    "SATROUTER_PORT": "tcp://10.0.0.1:8080",
    "SATROUTER_PORT_8080_TCP": "tcp://10.0.0.1:8080",
    "SATROUTER_PORT_8080_TCP_ADDR": "10.0.0.1",
    "SATROUTER_PORT_8080_TCP_PORT": "8080",
    "SATROUTER_PORT_8080_TCP_PROTO": "tcp",
    "SATROUTER_SERVICE_HOST": "10.0.0.1",
    "SATROUTER_SERVICE_PORT": "8080",
    "SATROUTER_SERVICE_PORT_HTTP": "8080",
    "SATROUTER_METRICS_PORT": "tcp://10.0.0.2:9464",
    "SATROUTER_METRICS_SERVICE_HOST": "10.0.0.2",
    "LNBITS_PORT": "tcp://10.0.0.3:5000",
    "LNBITS_SERVICE_HOST": "10.0.0.3",
}
LNBITS_ENV_FILE = {
    "LNBITS_DATA_FOLDER": "./data",
    "LNBITS_BACKEND_WALLET_CLASS": "FakeWallet",
    "LNBITS_ADMIN_UI": "true",
    "LNBITS_RATE_LIMIT_NO": "6000",
}


def test_kubernetes_service_links_and_lnbits_variables_are_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in {**KUBERNETES_SERVICE_LINKS, **LNBITS_ENV_FILE}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LNBITS_URL", "http://lnbits:5000")  # ours, still read
    import service.config

    monkeypatch.setattr(service.config, "_warned", set())
    with caplog.at_level("WARNING", logger="service.config"):
        settings = load_settings()
        load_settings()  # loaded twice (the CLI does): still one warning each
    assert settings.port == 8080  # the service link's tcp://... is not the port
    assert settings.metrics_port == 9464
    assert settings.lnbits_url == "http://lnbits:5000"
    warned = [r.getMessage() for r in caplog.records]
    for name in {**KUBERNETES_SERVICE_LINKS, **LNBITS_ENV_FILE}:
        assert sum(m.startswith(f"ignoring {name}:") for m in warned) == 1, name
    assert len(warned) == len(KUBERNETES_SERVICE_LINKS) + len(LNBITS_ENV_FILE)


def test_an_explicit_port_still_wins_and_typos_still_stop_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {**KUBERNETES_SERVICE_LINKS, **LNBITS_ENV_FILE}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SATROUTER_PORT", "9000")
    assert load_settings().port == 9000
    monkeypatch.setenv("SATROUTER_PROT", "9000")
    with pytest.raises(ConfigError, match="SATROUTER_PROT"):
        load_settings()
    monkeypatch.delenv("SATROUTER_PROT")
    monkeypatch.setenv("LNBITS_ADMINKEY", "x")  # a misspelt LNBITS_ADMIN_KEY is not LNbits'
    with pytest.raises(ConfigError, match="LNBITS_ADMINKEY"):
        load_settings()
    monkeypatch.delenv("LNBITS_ADMINKEY")
    monkeypatch.setenv("SATROUTER_PORT", "tcp-ish")  # not a service link: invalid, named
    with pytest.raises(ConfigError, match="SATROUTER_PORT"):
        load_settings()


@pytest.mark.parametrize("name", ["SATROUTER_ADMIN_TOKEN", "SATROUTER_METRICS_TOKEN"])
@pytest.mark.parametrize("value", ["", " ", "short-token", "a" * 15])
def test_an_empty_or_short_token_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name}: .*at least 16 characters"):
        load_settings()


def test_a_long_token_loads_and_metrics_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATROUTER_ADMIN_TOKEN", "a" * 16)
    assert load_settings().admin_token is not None
    assert load_settings().metrics_port == 9464  # the loopback listener by default
    assert load_settings().metrics_host == "127.0.0.1"
    monkeypatch.setenv("SATROUTER_METRICS_PORT", "off")
    assert load_settings().metrics_port is None
