"""Settings are read and checked in one place (`proactive.config.load_settings`),
and nothing meant for local development or tests is accepted in Azure."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import pytest

from proactive.config import (
    PRODUCTION_SETTINGS,
    SETTINGS,
    Settings,
    load_settings,
)
from proactive.errors import ConfigError
from proactive.hosting import AZURE_IF_WEBSITE, AZURE_VARIABLES, running_in_azure

LOCAL = {"PROACTIVE_LOCAL_DEV": "true"}
APP_ID = "0f3c9a5e-1111-4222-8333-444455556666"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
PRODUCTION = {"MicrosoftAppId": APP_ID, "MicrosoftAppType": "UserAssignedMSI",
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


def test_the_local_connector_must_be_a_loopback_url() -> None:
    assert load_settings({**LOCAL, "PROACTIVE_LOCAL_CONNECTOR": "http://127.0.0.1:3978, "
                                   "https://localhost:8443/teams"}).local_connectors == (
        "http://127.0.0.1:3978", "https://localhost:8443/teams")
    assert load_settings(LOCAL).local_connectors == ("http://localhost:56150",
                                                     "http://localhost:3979")
    for bad in ("https://evil.example:443", "ftp://127.0.0.1:21", "127.0.0.1:3978"):
        with pytest.raises(ConfigError, match="PROACTIVE_LOCAL_CONNECTOR entry"):
            load_settings({**LOCAL, "PROACTIVE_LOCAL_CONNECTOR": bad})


def test_local_development_mode_is_refused_in_a_kubernetes_pod() -> None:
    # Functions on Kubernetes (KEDA), AKS, Container Apps: a hosted instance
    # whatever else is (not) set.
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST is set"):
        load_settings({**LOCAL, "KUBERNETES_SERVICE_HOST": "10.0.0.1"})


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


# --- storage: a connection string or the identity settings infra/ sets ----------------

IDENTITY = {"AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": "5c1d7c3e-0b1a-4c1f-9d55-7a1e0c0ffee1",
            "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net/",
            "AzureWebJobsStorage__tableServiceUri": "https://acct.table.core.windows.net/"}


class Recording(dict[str, str]):
    """An environment that notes every name looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def test_the_list_of_settings_is_what_the_app_reads() -> None:
    for values in ({}, IDENTITY, {**PRODUCTION, "WEBSITE_INSTANCE_ID": "x"}):
        env = Recording(values)
        with contextlib.suppress(ConfigError):
            load_settings(env)
        assert env.read - set(AZURE_VARIABLES) - set(AZURE_IF_WEBSITE) == set(SETTINGS)
    assert set(PRODUCTION_SETTINGS) == set(SETTINGS) - {"PROACTIVE_LOCAL_DEV",
                                                        "PROACTIVE_LOCAL_CONNECTOR",
                                                        "PROACTIVE_CLOUD_OVERRIDE"}


def test_the_readme_documents_every_setting() -> None:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    documented: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            documented |= set(re.findall(r"`([A-Za-z][A-Za-z0-9_]*)`", line.split("|")[1]))
    assert documented == set(SETTINGS)


def test_identity_based_storage_is_read_with_its_endpoints() -> None:
    settings = load_settings({**LOCAL, **IDENTITY})
    assert settings.storage_by_identity and settings.storage_connection == ""
    assert settings.storage_credential == "managedidentity"
    assert settings.storage_url("queue") == "https://acct.queue.core.windows.net"
    assert settings.storage_url("table") == "https://acct.table.core.windows.net"
    assert load_settings({**PRODUCTION_IDENTITY, "WEBSITE_INSTANCE_ID": "x"}).azure


PRODUCTION_IDENTITY = {"MicrosoftAppId": APP_ID, "MicrosoftAppType": "UserAssignedMSI", **IDENTITY}


@pytest.mark.parametrize(("cloud", "suffix"), [
    ("Public", "core.windows.net"), ("GCC", "core.windows.net"),
    ("GCCHigh", "core.usgovcloudapi.net"), ("DoD", "core.usgovcloudapi.net")])
def test_the_account_name_alone_gives_the_clouds_endpoints(cloud: str, suffix: str) -> None:
    settings = load_settings({**LOCAL, "PROACTIVE_CLOUD": cloud,
                              "AzureWebJobsStorage__accountName": "proactivest"})
    assert settings.storage_url("queue") == f"https://proactivest.queue.{suffix}"
    assert settings.storage_url("table") == f"https://proactivest.table.{suffix}"


@pytest.mark.parametrize(("env", "says"), [
    ({"AzureWebJobsStorage": "UseDevelopmentStorage=true", **IDENTITY},
     "are both set: set one of them"),
    ({**IDENTITY, "AzureWebJobsStorage__credential": "clientsecret"},
     "AzureWebJobsStorage__credential must be 'managedidentity'"),
    ({"AzureWebJobsStorage__queueServiceUri": "https://a.queue.core.windows.net"},
     "AzureWebJobsStorage__tableServiceUri is not set (nor AzureWebJobsStorage__accountName)"),
    ({**IDENTITY, "AzureWebJobsStorage__tableServiceUri": "http://acct.table.core.windows.net"},
     "must be an https URL (a token is never sent in clear)"),
    ({"AzureWebJobsStorage__accountName": "Not_An_Account"}, "must be a storage account name"),
])
def test_identity_storage_settings_that_cannot_work_are_refused(env: dict[str, str],
                                                                 says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**LOCAL, **env})
    assert sum(says in p for p in info.value.problems) == 1, info.value.problems


@pytest.mark.parametrize("storage", [
    {},  # nothing set: Azurite's defaults locally
    {"AzureWebJobsStorage": "UseDevelopmentStorage=true"},
    {"AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                            "AccountKey=abc;QueueEndpoint=http://127.0.0.1:10001/x"},
    {"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k;"
                            "TableEndpoint=https://localhost:10002/a"},
    {**IDENTITY, "AzureWebJobsStorage__queueServiceUri": "https://127.0.0.1:10001/acct"},
])
def test_the_local_emulator_is_refused_in_azure(storage: dict[str, str]) -> None:
    env = {"MicrosoftAppId": APP_ID, "MicrosoftAppType": "UserAssignedMSI", **storage}
    load_settings(env)  # locally, fine
    with pytest.raises(ConfigError, match=r"refused in Azure \(WEBSITE_INSTANCE_ID is set"):
        load_settings({**env, "WEBSITE_INSTANCE_ID": "x"})


# --- id-shaped settings (issue 16 §4) ---------------------------------------

@pytest.mark.parametrize(("env", "says"), [
    ({"MicrosoftAppId": "my-bot"},
     "MicrosoftAppId must be the bot's app (client) id (a GUID like "),
    ({"MicrosoftAppTenantId": "contoso.onmicrosoft.com"},
     "MicrosoftAppTenantId must be a tenant id (a GUID like "),
    ({"PROACTIVE_API_TENANT": "common"}, "PROACTIVE_API_TENANT must be a tenant id"),
    ({"AzureWebJobsStorage": "", "AzureWebJobsStorage__clientId": "my-identity",
      "AzureWebJobsStorage__accountName": "acct"},
     "AzureWebJobsStorage__clientId must be the managed identity's client id"),
    ({"PROACTIVE_ALLOWED_TENANTS": f"{TENANT};{APP_ID}"},
     f"PROACTIVE_ALLOWED_TENANTS entry '{TENANT};{APP_ID}' is not a tenant id (GUID): "
     "separate tenant ids with commas"),
    ({"PROACTIVE_ALLOWED_TENANTS": f"{APP_ID}, {{{TENANT}}}"},
     f"PROACTIVE_ALLOWED_TENANTS entry '{{{TENANT}}}' is not a tenant id (GUID): "
     "write the GUID without braces"),
    ({"PROACTIVE_ALLOWED_TENANTS": f"{TENANT},contoso.com"},
     "PROACTIVE_ALLOWED_TENANTS entry 'contoso.com' is not a tenant id (GUID): a domain "
     "name can't be checked"),
])
def test_an_id_setting_that_is_no_guid_stops_the_app_naming_it(env: dict[str, str],
                                                                says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**PRODUCTION, **env})
    assert [p for p in info.value.problems if says in p], info.value.problems
    assert len(info.value.problems) == 1, info.value.problems


def test_guids_separated_by_commas_and_spaces_are_accepted() -> None:
    other = "00000000-0000-4000-8000-00000000BEEF"
    settings = load_settings({**PRODUCTION, "MicrosoftAppTenantId": TENANT,
                              "PROACTIVE_ALLOWED_TENANTS": f" {TENANT} , {other},"})
    assert settings.allowed_tenants == (TENANT, other)

