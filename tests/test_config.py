"""Settings are read and checked in one place (`proactive.config.load_settings`),
and nothing meant for local development or tests is accepted in Azure."""

from __future__ import annotations

import os

import pytest

from proactive.config import (
    AZURE_IF_WEBSITE,
    AZURE_VARIABLES,
    ConfigError,
    Settings,
    load_settings,
    running_in_azure,
)

LOCAL = {"PROACTIVE_LOCAL_DEV": "true"}
PRODUCTION = {"MicrosoftAppId": "app", "MicrosoftAppType": "UserAssignedMSI",
              "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k"}
OVERRIDE = '{"openid_metadata_url": "http://127.0.0.1:1/meta"}'


@pytest.mark.parametrize("variable", AZURE_VARIABLES)
def test_local_development_mode_is_refused_in_azure(variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**LOCAL, variable: "x"})
    assert "PROACTIVE_LOCAL_DEV" in str(info.value) and variable in str(info.value)


@pytest.mark.parametrize("variable", AZURE_VARIABLES)
def test_the_cloud_override_is_refused_in_azure(variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**PRODUCTION, "PROACTIVE_CLOUD_OVERRIDE": OVERRIDE, variable: "x"})
    assert info.value.problems == (
        f"PROACTIVE_CLOUD_OVERRIDE is for tests only and is refused when running in Azure "
        f"({variable} is set)",)


@pytest.mark.parametrize("variable", AZURE_IF_WEBSITE)
def test_variables_set_outside_azure_too_count_only_with_an_app_service_one(
        variable: str) -> None:
    # Dev containers set CONTAINER_NAME (this sandbox does), Azure Arc sets
    # IDENTITY_ENDPOINT on ordinary machines.
    assert not running_in_azure({variable: "x"})
    assert load_settings({**LOCAL, variable: "x"}).local_dev
    assert running_in_azure({variable: "x", "WEBSITE_AUTH_ENABLED": "False"})
    with pytest.raises(ConfigError, match=f"{variable} and WEBSITE_AUTH_ENABLED"):
        load_settings({**LOCAL, variable: "x", "WEBSITE_AUTH_ENABLED": "0"})


def test_empty_variables_are_not_azure() -> None:
    assert not running_in_azure({name: " " for name in AZURE_VARIABLES})
    assert load_settings(LOCAL).local_dev


def test_local_development_and_the_override_are_accepted_locally() -> None:
    settings = load_settings({**LOCAL, "PROACTIVE_CLOUD_OVERRIDE": OVERRIDE})
    assert settings.local_dev and settings.cloud_override == OVERRIDE and not settings.azure


def test_production_settings_are_accepted_in_azure() -> None:
    settings = load_settings({**PRODUCTION, "WEBSITE_INSTANCE_ID": "abc"})
    assert settings.azure == "WEBSITE_INSTANCE_ID"


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"PROACTIVE_MAX_ATTEMPTS": "eight", "PROACTIVE_TENANT_RPS": "lots",
                       "PROACTIVE_CLOUD": "Mars", "MicrosoftAppPassword": "s3cr3t-value",
                       "PROACTIVE_LOCAL_DEV": "true", "WEBSITE_SITE_NAME": "app"})
    problems = info.value.problems
    for expected in ("PROACTIVE_MAX_ATTEMPTS must be a whole number",
                     "PROACTIVE_TENANT_RPS must be a whole number",
                     "PROACTIVE_CLOUD must be one of", "running in Azure (WEBSITE_SITE_NAME",
                     "bot credentials are configured", "AzureWebJobsStorage is not set"):
        assert sum(expected in p for p in problems) == 1, (expected, problems)
    assert "s3cr3t-value" not in str(info.value)


@pytest.mark.parametrize(("override", "says"), [
    ("{not json", "not valid JSON"),
    ("[1]", "must be a JSON object"),
    ('{"issuer": ""}', "issuer must be a non-empty string"),
    ('{"colour": "red"}', "unknown field 'colour'"),
])
def test_a_bad_cloud_override_is_a_settings_problem(override: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings({**LOCAL, "PROACTIVE_CLOUD_OVERRIDE": override})


def test_settings_made_in_code_are_checked_by_the_same_rules() -> None:
    with pytest.raises(ConfigError, match="MicrosoftAppId is not set"):
        Settings().validate()
    assert Settings(local_dev=True).validate().local_dev


def test_the_test_run_itself_is_not_azure() -> None:
    # The tests and the local tools never set these: were one set here, every
    # local-development test would be testing the refusal instead.
    assert not running_in_azure(os.environ), [n for n in AZURE_VARIABLES if os.environ.get(n)]
