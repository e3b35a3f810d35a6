"""How the launcher explains Application Insights settings: flags, the connection-string rule, the banner."""

from __future__ import annotations

import logging

import pytest
import typer
from azmlinfsrv import banner
from azmlinfsrv import environment
from azmlinfsrv.main import _expand_prefixes
from azmlinfsrv.main import app
from typer.testing import CliRunner

KEY = "0a1b2c3d-1111-2222-3333-444444444444"
CS = f"InstrumentationKey={KEY};IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/"
MODEL = {"AZUREML_MODEL_DIR": "m"}


def validated(env: dict[str, str], caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[logging.LogRecord]]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="azmlinfsrv"):
        lines = environment.validate(env)
    return lines, [r for r in caplog.records if r.name == "azmlinfsrv"]


def test_connection_string_alone_turns_telemetry_on_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    env = {**MODEL, "APPLICATIONINSIGHTS_CONNECTION_STRING": CS}
    lines, records = validated(env, caplog)
    assert env["AML_APP_INSIGHTS_ENABLED"] == "true"
    assert lines == ["Valid Application Insights connection string provided."]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (
            logging.INFO,
            "Application Insights is on because APPLICATIONINSIGHTS_CONNECTION_STRING is set and "
            "AML_APP_INSIGHTS_ENABLED is not; set AML_APP_INSIGHTS_ENABLED=false to turn it off.",
        )
    ]


@pytest.mark.parametrize("switch", ["false", "False", "0"])
def test_explicit_switch_off_wins_with_one_warning(switch: str, caplog: pytest.LogCaptureFixture) -> None:
    for extra in ({}, {"AML_APP_INSIGHTS_KEY": KEY}):
        env = {**MODEL, **extra, "APPLICATIONINSIGHTS_CONNECTION_STRING": CS, "AML_APP_INSIGHTS_ENABLED": switch}
        lines, records = validated(env, caplog)
        assert env["AML_APP_INSIGHTS_ENABLED"] == "false"
        assert lines == []
        [record] = records
        assert record.levelno == logging.WARNING
        message = record.getMessage()
        assert f"AML_APP_INSIGHTS_ENABLED is {switch!r}" in message
        assert "APPLICATIONINSIGHTS_CONNECTION_STRING is ignored" in message
        assert KEY not in message


def test_key_without_switch_is_off_with_a_warning_naming_both_ways(caplog: pytest.LogCaptureFixture) -> None:
    env = {**MODEL, "AML_APP_INSIGHTS_KEY": KEY}
    lines, records = validated(env, caplog)
    assert env["AML_APP_INSIGHTS_ENABLED"] == "false"  # compat: upstream needs the switch for a bare key
    assert lines == []
    [record] = records
    assert record.levelno == logging.WARNING
    assert "AML_APP_INSIGHTS_ENABLED=true" in record.getMessage()
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in record.getMessage()


def test_nothing_set_stays_silent(caplog: pytest.LogCaptureFixture) -> None:
    env = dict(MODEL)
    assert validated(env, caplog) == ([], [])
    assert env["AML_APP_INSIGHTS_ENABLED"] == "false"


def test_upstream_key_configuration_prints_what_upstream_prints(caplog: pytest.LogCaptureFixture) -> None:
    env = {**MODEL, "AML_APP_INSIGHTS_ENABLED": "true", "AML_APP_INSIGHTS_KEY": KEY}
    assert validated(env, caplog) == (["Valid Application Insights instrumentation key provided."], [])
    with_endpoint = {**env, "APPLICATIONINSIGHTS_CONNECTION_STRING": "IngestionEndpoint=https://x.example/"}
    assert validated(with_endpoint, caplog) == (["Valid Application Insights instrumentation key provided."], [])
    assert with_endpoint["AML_APP_INSIGHTS_ENABLED"] == "true"


@pytest.mark.parametrize(
    ("connection_string", "reason"),
    [
        ("InstrumentationKey=secret-not-a-guid", "the Application Insights instrumentation key is not a valid GUID"),
        ("IngestionEndpoint=https://secret.example/", "no Application Insights instrumentation key was provided"),
        (f"InstrumentationKey={KEY};Authorization=secret", "the connection string's Authorization must be ikey"),
        ("secret-without-equals", "the Application Insights connection string is malformed"),
    ],
)
def test_unusable_connection_string_disables_telemetry_without_echoing_it(
    connection_string: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = {**MODEL, "APPLICATIONINSIGHTS_CONNECTION_STRING": connection_string}
    lines, records = validated(env, caplog)
    assert records == []  # no "is on because ..." for a connection string that was just refused
    assert env["AML_APP_INSIGHTS_ENABLED"] == "false"
    assert lines[0].startswith(f"Invalid Application Insights connection string provided: {reason}")
    assert lines[1] == "Application Insights has been disabled."
    assert "secret" not in "\n".join(lines)
    assert KEY not in "\n".join(lines)


def test_connection_string_given_as_the_key_points_to_the_right_flag(caplog: pytest.LogCaptureFixture) -> None:
    env = dict(MODEL)
    environment.merge(environment.CliOptions(entry_script="s.py", appinsights_instrumentation_key=CS), env, cwd="/")
    lines, _ = validated(env, caplog)
    assert lines == [
        "Invalid Application Insights instrumentation key provided.",
        "Application Insights has been disabled.",
        "That value is a connection string, not an instrumentation key: pass it with "
        "--appinsights_connection_string or APPLICATIONINSIGHTS_CONNECTION_STRING instead.",
    ]
    assert env["AML_APP_INSIGHTS_ENABLED"] == "false"


def test_connection_string_flag_sets_the_variable_and_the_switch(caplog: pytest.LogCaptureFixture) -> None:
    # Like --appinsights_instrumentation_key, the flag wins over an environment switched off.
    env = {**MODEL, "AML_APP_INSIGHTS_ENABLED": "false"}
    environment.merge(environment.CliOptions(entry_script="s.py", appinsights_connection_string=CS), env, cwd="/")
    assert env["APPLICATIONINSIGHTS_CONNECTION_STRING"] == CS
    lines, records = validated(env, caplog)
    assert env["AML_APP_INSIGHTS_ENABLED"] == "true"
    assert lines == ["Valid Application Insights connection string provided."]
    assert records == []


def test_help_lists_the_connection_string_flag() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "--appinsights_connection_string" in result.output
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in result.output


def test_upstream_prefix_of_the_key_flag_still_expands() -> None:
    # "--appinsights" was unambiguous upstream; the new flag shares the prefix but must not break it.
    command = typer.main.get_command(app)
    assert _expand_prefixes(["--appinsights", KEY], command) == ["--appinsights_instrumentation_key", KEY]
    assert _expand_prefixes(["--appinsights_c", CS], command) == ["--appinsights_connection_string", CS]


# -- the banner ------------------------------------------------------------------------------------------------


def rendered(env: dict[str, str]) -> str:
    return banner.render({"SERVER_PORT": "5001", "HEALTH_PORT": "5001", **env})


def test_banner_shows_the_target_with_a_masked_key_and_never_the_whole_secret() -> None:
    text = rendered({"AML_APP_INSIGHTS_ENABLED": "true", "APPLICATIONINSIGHTS_CONNECTION_STRING": CS})
    assert "Application Insights Enabled: true" in text
    assert "Application Insights Key: from the connection string" in text
    assert (
        "Application Insights Telemetry: on, to https://westeurope-5.in.applicationinsights.azure.com "
        "(instrumentation key 0a1b2c3d...)"
    ) in text
    assert KEY not in text
    assert CS not in text


def test_banner_keeps_upstreams_lines_for_a_key_and_adds_the_target() -> None:
    text = rendered({"AML_APP_INSIGHTS_ENABLED": "true", "AML_APP_INSIGHTS_KEY": KEY})
    target = "on, to https://dc.services.visualstudio.com (instrumentation key 0a1b2c3d...)"
    assert "Application Insights Key: AppInsights key provided" in text
    assert KEY not in text
    lines = text.splitlines()
    # Our line comes after all of upstream's settings, so parsers of upstream's block see no change.
    assert lines.index(f"Application Insights Telemetry: {target}") == (
        lines.index("Create dedicated endpoint for health: None") + 1
    )


def test_banner_says_off_and_entra() -> None:
    assert "Application Insights Telemetry: off" in rendered({"AML_APP_INSIGHTS_ENABLED": "false"})
    assert "Application Insights Telemetry: off" in rendered({})
    entra = rendered(
        {"AML_APP_INSIGHTS_ENABLED": "true", "APPLICATIONINSIGHTS_CONNECTION_STRING": f"{CS};Authorization=AAD"}
    )
    assert "(instrumentation key 0a1b2c3d..., Microsoft Entra ID)" in entra
