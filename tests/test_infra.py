"""The `azd up` infrastructure (azure.yaml, infra/) gives the app what it needs and
nothing it must not have, checked without Azure: no Bicep compiler or azd runs here.

Every .bicep file is parsed (pycep-parser, the parser checkov uses) and the parsed
tree is held against the app: the app settings against the settings the app reads
(`proactive.config.PRODUCTION_SETTINGS`), the role assignments against the data
planes it uses and each storage operation it performs (`proactive.storage.
credentials.OPERATIONS`),
the declared tables and queues against the names in the code, the storage account's
flags, the Flex Consumption plan, the bot.

The last part is the static gate (`infra_problems`): the known traps of a first
`azd up` (properties and app settings Flex Consumption rejects, security flags, the
principal type, the region list, AVM telemetry, the refusals), each check seen
failing on a copy of infra/ with its defect put back. (checkov's Bicep scan was
dropped: it can't read inside registry modules, so it saw 0 resources here.)
"""

from __future__ import annotations

import json
import re
import shutil
from functools import cache
from pathlib import Path
from typing import Any, cast

from pycep import BicepParser

from proactive.config import PRODUCTION_SETTINGS, Settings
from proactive.storage.credentials import OPERATIONS

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"

# Built-in role definition ids, written out here independently of rbac.bicep.
BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"

# The Azure Verified Modules and the versions whose source and CHANGELOG were read
# for the parameter names used (see the comments in infra/). Moving a pin means
# reading the new version's CHANGELOG for renamed parameters first.
PINNED = {
    "avm/res/managed-identity/user-assigned-identity": "0.6.0",
    "avm/res/web/serverfarm": "0.7.0",
    "avm/res/web/site": "0.24.0",
    "avm/res/storage/storage-account": "0.33.0",
    "avm/res/operational-insights/workspace": "0.16.1",
    "avm/res/insights/component": "0.8.0",
    "avm/res/key-vault/vault": "0.14.0",
    "avm/res/network/virtual-network": "0.10.1",
    "avm/res/network/private-endpoint": "0.12.1",
    "avm/res/network/private-dns-zone": "0.8.1",
}

# Settings the infrastructure sets that only the platform reads: the Functions
# host's blob endpoint (deployment package, timer locks; the app uses no blobs) and
# Application Insights. The other AzureWebJobsStorage__* the host and the app share.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__blobServiceUri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# Settings the app reads that the infrastructure leaves out on purpose, and why.
NOT_SET = {
    # A connection string would carry an account key; the identity settings replace it.
    "AzureWebJobsStorage": "keyless: the AzureWebJobsStorage__* identity settings instead",
    "MicrosoftAppCertificatePath": "the certificate credential is not wired by this infra",
    "MicrosoftAppCertificateThumbprint": "the certificate credential is not wired by this infra",
    "PROACTIVE_MAX_ACTIVITY_BYTES": "the app's default (Teams' limit)",
    "PROACTIVE_TENANT_RPS": "the app's default (Teams' limit)",
    "PROACTIVE_MAX_ATTEMPTS": "the app's default",
    "PROACTIVE_CLAIM_LEASE_SECONDS": "the app's default",
    "PROACTIVE_MAX_CALLS_IN_FLIGHT": "the app's default",
    "PROACTIVE_PAGE_ROLE": "the app's default role name (Proactive.Operations)",
    "PROACTIVE_WELCOME": "the app's default",
    "PROACTIVE_API_AUDIENCE": "the HTTP API's optional Entra ID check: off unless set",
    "PROACTIVE_API_ROLE": "the HTTP API's optional Entra ID check: off unless set",
    "PROACTIVE_API_TENANT": "the HTTP API's optional Entra ID check: off unless set",
    "PROACTIVE_GRAPH_APP_CATALOG_ID": "proactive install is off until an admin consents Graph",
    "PROACTIVE_GRAPH_APP_MANIFEST_ID": "proactive install is off until an admin consents Graph",
    "PROACTIVE_GRAPH_RPS": "the app's default (Graph's Teams limit)",
}
# Set by the infrastructure before the app reads them (the bot's display name, for
# the Teams app package). When the app reads one, this test fails: take it out.
NOT_READ_YET: set[str] = set()
NEVER_IN_AZURE = {"PROACTIVE_LOCAL_DEV", "PROACTIVE_LOCAL_CONNECTOR", "PROACTIVE_CLOUD_OVERRIDE"}


@cache
def bicep(relative: str) -> dict[str, Any]:
    return cast(dict[str, Any], BicepParser(cache=False).parse(file_path=INFRA / relative))


def _body(declaration: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's body, past `if (...)` and `for` wrappers."""
    config = declaration["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def _condition(declaration: dict[str, Any]) -> Any:
    return declaration["config"].get("condition")


def _params(module: str) -> dict[str, Any]:
    return _body(bicep("main.bicep")["modules"][module])["params"]


def _object_keys(value: Any) -> tuple[set[str], set[str]]:
    """Keys of an object expression: (always present, present under a condition).
    Understands object literals, union(...) and `cond ? {...} : {...}`."""
    if isinstance(value, dict) and "function" in value:
        assert value["function"]["type"] == "union", value
        always: set[str] = set()
        conditional: set[str] = set()
        for arg in value["function"]["parameters"].values():
            a, c = _object_keys(arg)
            always |= a
            conditional |= c
        return always, conditional
    if isinstance(value, dict) and "operator" in value:
        assert value["operator"]["type"] == "conditional", value
        operands = value["operator"]["operands"]
        t = set().union(*_object_keys(operands["true_value"]))
        f = set().union(*_object_keys(operands["false_value"]))
        return t & f, t ^ f
    assert isinstance(value, dict), value
    return set(value), set()


def _app_settings() -> dict[str, Any]:
    """The one variable in app/api.bicep holding every app setting, by name."""
    value = bicep("app/api.bicep")["variables"]["appSettings"]["value"]
    settings: dict[str, Any] = {}

    def collect(node: Any) -> None:
        if isinstance(node, dict) and "function" in node:
            for arg in node["function"]["parameters"].values():
                collect(arg)
        elif isinstance(node, dict) and "operator" in node:
            collect(node["operator"]["operands"]["true_value"])
            collect(node["operator"]["operands"]["false_value"])
        else:
            settings.update(node)

    collect(value)
    return settings


def _table_names_in_code() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "proactive").rglob("*.py"):
        names |= set(re.findall(r'^[A-Z_]+_TABLE = "(\w+)"', path.read_text(), re.M))
    return names


def test_every_bicep_file_parses() -> None:
    files = sorted(p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*.bicep"))
    assert files == ["app/api.bicep", "app/bot.bicep", "app/rbac.bicep",
                     "app/storage-PrivateEndpoint.bicep", "app/vnet.bicep", "main.bicep"]
    for name in files:
        assert bicep(name)["globals"], name


def test_azure_yaml_names_one_python_function_service_at_the_root() -> None:
    lines = [line.rstrip() for line in (ROOT / "azure.yaml").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    services = lines[lines.index("services:") + 1:]
    assert services == ["  api:", "    project: .", "    language: python",
                        "    host: function"]


def test_parameters_come_from_the_azd_environment() -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = bicep("main.bicep")["parameters"]
    assert set(params) <= set(declared), set(params) - set(declared)
    required = {name for name, p in declared.items() if "default" not in p}
    assert required <= set(params), required - set(params)
    values = {name: p["value"] for name, p in params.items()}
    assert values["environmentName"] == "${AZURE_ENV_NAME}"
    assert values["location"] == "${AZURE_LOCATION}"
    assert values["principalId"] == "${AZURE_PRINCIPAL_ID}"
    assert values["vnetEnabled"] == "${VNET_ENABLED=false}"
    assert values["botAppType"] == "${BOT_APP_TYPE=UserAssignedMSI}"
    assert all(re.fullmatch(r"\$\{[A-Z_]+(=[^}]*)?\}", v) for v in values.values()), values
    # No secret travels through azd's environment: the bot's secret goes to Key Vault.
    assert not [n for n in declared if "password" in n.lower() or "secret" in n.lower()]


def test_registry_modules_are_pinned_to_the_versions_read() -> None:
    used: dict[str, str] = {}
    for path in INFRA.rglob("*.bicep"):
        for module in bicep(path.relative_to(INFRA).as_posix()).get("modules", {}).values():
            if module["type"] == "bicep_registry_alias":
                used[module["detail"]["path"]] = module["detail"]["tag"]
    assert used == PINNED


def test_app_settings_match_what_the_app_reads() -> None:
    infra = set(_app_settings())
    app = set(PRODUCTION_SETTINGS) | PLATFORM_SETTINGS
    read_but_not_set = app - infra
    set_but_not_read = infra - app
    assert read_but_not_set == set(NOT_SET), (
        f"the app reads these, infra doesn't set them: {sorted(read_but_not_set - set(NOT_SET))}; "
        f"listed as left out but now set or no longer read: "
        f"{sorted(set(NOT_SET) - read_but_not_set)}")
    assert set_but_not_read == NOT_READ_YET, (
        f"infra sets these, the app doesn't read them: {sorted(set_but_not_read)}")


def test_nothing_for_local_development_and_no_secret_in_app_settings() -> None:
    settings = _app_settings()
    assert not NEVER_IN_AZURE & set(settings)
    # Identity everywhere: no connection string or key names a credential.
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${identityClientId};Authorization=AAD")
    assert settings["MicrosoftAppPassword"] == "@Microsoft.KeyVault(SecretUri=${botSecretUri})"
    _, conditional = _object_keys(bicep("app/api.bicep")["variables"]["appSettings"]["value"])
    assert conditional == {"MicrosoftAppPassword"}  # only with an app registration
    # The settings are replaced, not merged: one added by hand doesn't survive a provision.
    (config,) = _body(bicep("app/api.bicep")["modules"]["api"])["params"]["configs"]
    assert config == {"name": "appsettings", "properties": "appSettings",
                      "retainCurrentAppSettings": False}
    for path in INFRA.rglob("*.bicep"):
        text = path.read_text()
        for word in ("listKeys", "AccountKey=", "SharedAccessSignature", "PROACTIVE_LOCAL_DEV:",
                     "PROACTIVE_CLOUD_OVERRIDE:"):
            assert word not in text, (path, word)


def test_storage_is_keyless_and_declares_the_tables_and_queues_the_app_uses() -> None:
    storage = _params("storage")
    assert storage["allowSharedKeyAccess"] is False
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["supportsHttpsTrafficOnly"] is True
    assert storage["defaultToOAuthAuthentication"] is True

    main = bicep("main.bicep")
    tables = storage["tableServices"]["tables"]
    assert tables["loop_type"]["detail"]["array_name"] == "tableNames"
    assert tables["config"] == {"name": "${tablePrefix}${table}"}
    declared = set(main["variables"]["tableNames"]["value"])
    assert declared == _table_names_in_code() == {
        "references", "deliveries", "activities", "pacing", "sends", "schedules",
        "preferences"}
    assert main["parameters"]["tablePrefix"]["default"] == ""
    assert _app_settings()["PROACTIVE_TABLE_PREFIX"] == "tablePrefix"

    defaults = Settings()
    assert main["parameters"]["outboxQueueName"]["default"] == defaults.outbox_queue
    queues = [q["name"] for q in storage["queueServices"]["queues"]]
    assert queues == ["outboxQueueName", "${outboxQueueName}-poison"]
    assert defaults.poison_queue == f"{defaults.outbox_queue}-poison"
    assert _app_settings()["OUTBOX_QUEUE"] == "outboxQueueName"
    # The Flex deployment package lives in a container of this account.
    assert storage["blobServices"]["containers"] == [{"name": "deploymentStorageContainerName"}]


def _assignments() -> list[tuple[str, str, str, Any]]:
    """(principal, role id, scope, condition) of each role assignment in rbac.bicep."""
    rbac = bicep("app/rbac.bicep")
    roles = {name: v["value"] for name, v in rbac["variables"].items()
             if isinstance(v["value"], str)}
    found = []
    for resource in rbac["resources"].values():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        body = _body(resource)
        role = body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        found.append((body["properties"]["principalId"], roles[role], body["scope"],
                      _condition(resource)))
    return found


def test_the_identity_gets_exactly_the_data_planes_the_app_uses() -> None:
    identity = {(role, scope, cond) for who, role, scope, cond in _assignments()
                if who == "managedIdentityPrincipalId"}
    assert identity == {
        (BLOB_DATA_OWNER, "storageAccount", None),  # deployment package, timer locks
        (QUEUE_DATA_CONTRIBUTOR, "storageAccount", None),  # the outbox and its poison queue
        (TABLE_DATA_CONTRIBUTOR, "storageAccount", None),  # references, deliveries...
        (METRICS_PUBLISHER, "applicationInsights", None),  # identity ingestion
        (KEY_VAULT_SECRETS_USER, "keyVault", "withKeyVault"),  # the bot's secret, if any
    }
    for who, _, _, _ in _assignments():
        assert who in {"managedIdentityPrincipalId", "userIdentityPrincipalId"}


# What each storage operation needs, from "Permissions for calling data operations"
# (learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory):
# alternatives, each a set of actions that together allow it.
_S = "Microsoft.Storage/storageAccounts"
_ENTITIES, _MESSAGES = f"{_S}/tableServices/tables/entities", f"{_S}/queueServices/queues/messages"
NEEDS: dict[tuple[str, str], list[set[str]]] = {
    ("table", "Create Table"): [{f"{_S}/tableServices/tables/write"}],
    ("table", "Query Entities"): [{f"{_ENTITIES}/read"}],
    ("table", "Insert Entity"): [{f"{_ENTITIES}/write"}, {f"{_ENTITIES}/add/action"}],
    ("table", "Update Entity"): [{f"{_ENTITIES}/write"}, {f"{_ENTITIES}/update/action"}],
    ("table", "Merge Entity"): [{f"{_ENTITIES}/write"}, {f"{_ENTITIES}/update/action"}],
    ("table", "Insert Or Merge Entity"): [
        {f"{_ENTITIES}/write"}, {f"{_ENTITIES}/add/action", f"{_ENTITIES}/update/action"}],
    ("table", "Insert Or Replace Entity"): [
        {f"{_ENTITIES}/write"}, {f"{_ENTITIES}/add/action", f"{_ENTITIES}/update/action"}],
    ("table", "Delete Entity"): [{f"{_ENTITIES}/delete"}],
    # "Sub-operation authorizes separately": ours insert, replace and delete.
    ("table", "Entity Group Transaction"): [
        {f"{_ENTITIES}/write", f"{_ENTITIES}/delete"},
        {f"{_ENTITIES}/add/action", f"{_ENTITIES}/update/action", f"{_ENTITIES}/delete"}],
    ("queue", "Create Queue"): [{f"{_S}/queueServices/queues/write"}],
    ("queue", "Put Message"): [{f"{_MESSAGES}/add/action"}, {f"{_MESSAGES}/write"}],
    ("queue", "Get Messages"): [{f"{_MESSAGES}/process/action"},
                                {f"{_MESSAGES}/delete", f"{_MESSAGES}/read"}],
    ("queue", "Peek Messages"): [{f"{_MESSAGES}/read"}],
    ("queue", "Delete Message"): [{f"{_MESSAGES}/process/action"}, {f"{_MESSAGES}/delete"}],
    ("queue", "Update Message"): [{f"{_MESSAGES}/write"}],
    # The Functions host's own (the platform's, same identity): the deployment
    # package and the timer trigger's singleton lock.
    ("blob", "Get Blob"): [{f"{_S}/blobServices/containers/blobs/read"}],
    ("blob", "Put Blob"): [{f"{_S}/blobServices/containers/blobs/write"}],
    ("blob", "Lease Blob"): [{f"{_S}/blobServices/containers/blobs/write"}],
    ("blob", "Create Container"): [{f"{_S}/blobServices/containers/write"}],
}
PLATFORM_OPERATIONS = {"blob": ("Get Blob", "Put Blob", "Lease Blob", "Create Container")}
# The built-in roles' actions and data actions, as Azure publishes them
# (`az role definition list --name "<role>"`).
ROLE_PERMISSIONS: dict[str, set[str]] = {
    BLOB_DATA_OWNER: {f"{_S}/blobServices/containers/*",
                      f"{_S}/blobServices/generateUserDelegationKey/action",
                      f"{_S}/blobServices/containers/blobs/*"},
    QUEUE_DATA_CONTRIBUTOR: {f"{_S}/queueServices/queues/{a}" for a in ("delete", "read", "write")}
    | {f"{_MESSAGES}/{a}" for a in ("delete", "read", "write", "process/action")},
    TABLE_DATA_CONTRIBUTOR: {f"{_S}/tableServices/tables/{a}" for a in ("delete", "read", "write")}
    | {f"{_ENTITIES}/{a}" for a in ("read", "write", "delete", "add/action", "update/action")},
}
# Client methods that reach storage, and the operations each one performs.
METHOD_OPERATIONS: dict[str, set[tuple[str, str]]] = {
    "create_table": {("table", "Create Table")},
    "create_table_if_not_exists": {("table", "Create Table")},
    "get_entity": {("table", "Query Entities")},
    "query_entities": {("table", "Query Entities")},
    "list_entities": {("table", "Query Entities")},
    "create_entity": {("table", "Insert Entity")},
    "update_entity": {("table", "Update Entity"), ("table", "Merge Entity")},
    # tables.merge merges; the allUsers index (storage/user_index.py) replaces.
    "upsert_entity": {("table", "Insert Or Merge Entity"), ("table", "Insert Or Replace Entity")},
    "delete_entity": {("table", "Delete Entity")},
    "submit_transaction": {("table", "Entity Group Transaction")},
    "create_queue": {("queue", "Create Queue")},
    "send_message": {("queue", "Put Message")},
    "peek_messages": {("queue", "Peek Messages")},
    "receive_message": {("queue", "Get Messages")},
    "receive_messages": {("queue", "Get Messages")},
    "delete_message": {("queue", "Delete Message")},
    "update_message": {("queue", "Update Message")},
}
# Every data-plane method of the SDKs' table and queue clients (and our
# RestTableClient's subset): a call to one not in METHOD_OPERATIONS fails the test
# until its operations are declared.
_SDK_METHODS = set(METHOD_OPERATIONS) | {
    "delete_table", "list_tables", "query_tables", "get_table_access_policy",
    "set_table_access_policy", "get_service_properties", "set_service_properties",
    "get_service_stats", "delete_queue", "list_queues", "get_queue_properties",
    "set_queue_metadata", "get_queue_access_policy", "set_queue_access_policy",
    "clear_messages"}
_STORAGE_CALL = re.compile(rf"\.({'|'.join(sorted(_SDK_METHODS))})\(")
# What the Functions host's queue trigger does with the app's identity in Azure
# (proactive_devtools/localhost.py does the same locally): receive, settle, renew
# the lease, and move a message to the poison queue.
TRIGGER_OPERATIONS = {("queue", "Get Messages"), ("queue", "Delete Message"),
                      ("queue", "Update Message"), ("queue", "Put Message")}


def _allowed(action: str, permissions: set[str]) -> bool:
    return any(action == p or (p.endswith("/*") and action.startswith(p[:-1]))
               for p in permissions)


def test_each_storage_operation_of_the_app_is_allowed_by_a_role_the_identity_holds() -> None:
    held = {role for who, role, scope, _ in _assignments()
            if who == "managedIdentityPrincipalId" and scope == "storageAccount"}
    permissions = set().union(*(ROLE_PERMISSIONS[role] for role in held))
    for service, operations in {**OPERATIONS, **PLATFORM_OPERATIONS}.items():
        for operation in operations:
            options = NEEDS[(service, operation)]
            assert any(all(_allowed(a, permissions) for a in option) for option in options), (
                f"{operation} ({service}) needs one of {options}; the identity's roles on "
                f"the account allow {sorted(permissions)}")


def test_the_declared_operations_are_what_the_code_calls() -> None:
    # tests/test_keyless.py checks the other side: what Azurite saw a full run do.
    called: dict[str, set[str]] = {}
    for path in (ROOT / "proactive").rglob("*.py"):
        for method in _STORAGE_CALL.findall(path.read_text()):
            called.setdefault(method, set()).add(path.relative_to(ROOT).as_posix())
    unknown = {m: files for m, files in called.items() if m not in METHOD_OPERATIONS}
    assert not unknown, f"storage calls with no operations listed in METHOD_OPERATIONS: {unknown}"
    performed = set().union(*(METHOD_OPERATIONS[m] for m in called)) | TRIGGER_OPERATIONS
    declared = {(service, op) for service, ops in OPERATIONS.items() for op in ops}
    assert performed == declared, (
        f"performed but not declared: {sorted(performed - declared)}; "
        f"declared but never performed: {sorted(declared - performed)}")


def test_the_deploying_user_optionally_gets_the_data_roles() -> None:
    user = {(role, scope, json.dumps(cond)) for who, role, scope, cond in _assignments()
            if who == "userIdentityPrincipalId"}
    with_key_vault = {"operator": {"type": "and", "operands": {
        "operand_1": "withUser", "operand_2": "withKeyVault"}}}
    assert user == {
        (BLOB_DATA_OWNER, "storageAccount", '"withUser"'),
        (QUEUE_DATA_CONTRIBUTOR, "storageAccount", '"withUser"'),
        (TABLE_DATA_CONTRIBUTOR, "storageAccount", '"withUser"'),
        (KEY_VAULT_SECRETS_OFFICER, "keyVault", json.dumps(with_key_vault)),
    }
    assert bicep("app/rbac.bicep")["parameters"]["userIdentityPrincipalId"]["default"] == ""


def test_a_flex_consumption_python_app_deployed_from_blob_by_identity() -> None:
    plan = _params("appServicePlan")
    assert plan["skuName"] == "FC1"  # serverfarm 0.7.0 then sets tier FlexConsumption
    assert plan["reserved"] is True
    assert bicep("main.bicep")["parameters"]["pythonVersion"]["default"] == "3.12"

    site = _body(bicep("app/api.bicep")["modules"]["api"])["params"]
    assert site["kind"] == "functionapp,linux"
    config = site["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "UserAssignedIdentity",
                                         "userAssignedIdentityResourceId": "identityId"}
    assert site["managedIdentities"] == {"userAssignedResourceIds": ["identityId"]}
    assert site["keyVaultAccessIdentityResourceId"] == "identityId"
    assert site["httpsOnly"] is True


def test_application_insights_takes_identity_ingestion_only() -> None:
    assert _params("monitoring")["disableLocalAuth"] is True


def test_the_bot_is_an_azure_bot_with_the_teams_channel() -> None:
    bot_file = bicep("app/bot.bicep")
    bot = bot_file["resources"]["bot"]
    assert bot["type"] == "Microsoft.BotService/botServices"
    body = _body(bot)
    assert body["kind"] == "azurebot"
    assert body["location"] == "global"
    assert body["properties"]["endpoint"] == "messagingEndpoint"
    assert body["properties"]["msaAppType"] == "appType"
    channel = bot_file["resources"]["teams"]
    assert channel["type"] == "Microsoft.BotService/botServices/channels"
    assert _body(channel)["name"] == "MsTeamsChannel"
    assert _body(channel)["properties"]["channelName"] == "MsTeamsChannel"

    main = bicep("main.bicep")
    params = _params("bot")
    assert params["messagingEndpoint"] == "https://${api.outputs.defaultHostname}/api/messages"
    assert main["parameters"]["botAppType"]["default"] == "UserAssignedMSI"
    assert bot_file["parameters"]["appType"]["decorators"][0]["argument"] == [
        "UserAssignedMSI", "SingleTenant"]  # no new multi-tenant bots since July 2025
    # The bot id the app uses is the bot id Azure registers.
    assert _params("api")["botAppId"] == params["appId"]
    assert _params("api")["botAppType"] == "botAppType" == params["appType"]


def test_outputs_tell_azd_and_the_operator_what_was_made() -> None:
    outputs = set(bicep("main.bicep")["outputs"])
    assert {"AZURE_LOCATION", "AZURE_TENANT_ID", "AZURE_RESOURCE_GROUP", "AZURE_FUNCTION_NAME",
            "SERVICE_API_NAME", "AZURE_STORAGE_BLOB_ENDPOINT", "AZURE_STORAGE_QUEUE_ENDPOINT",
            "AZURE_STORAGE_TABLE_ENDPOINT", "OUTBOX_QUEUE", "BOT_ID",
            "BOT_MESSAGING_ENDPOINT"} <= outputs


# --- the static gate: known traps of a first `azd up` -------------------------------------------

# Site properties Flex Consumption rejects or ignores: "Flex Consumption plan deprecations"
# (learn.microsoft.com/azure/azure-functions/functions-app-settings, read 2026-12-06).
# ftpsState makes newer ARM stamps refuse the site (error 51021).
FLEX_REJECTED_SITE_CONFIG = {
    "ftpsState", "alwaysOn", "containerSize", "isReserved", "IsXenon", "javaVersion",
    "linuxFxVersion", "LinuxFxVersion", "netFrameworkVersion", "powerShellVersion",
    "functionAppScaleLimit", "preWarmedInstanceCount", "use32BitWorkerProcess",
    "vnetBackupRestoreEnabled", "vnetContentShareEnabled", "vnetImagePullEnabled",
    "vnetRouteAllEnabled", "windowsFxVersion"}
# The siteConfig properties this app sets, each checked against that list.
FLEX_SITE_CONFIG = {"minTlsVersion": "1.2", "http20Enabled": True}
# App settings on the same list: the runtime and deployment live in functionAppConfig.
FLEX_REJECTED_SETTINGS = {
    "ENABLE_ORYX_BUILD", "FUNCTIONS_EXTENSION_VERSION", "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION", "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT", "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET", "WEBSITE_CONTENTSHARE", "WEBSITE_DNS_SERVER",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT", "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_SKIP_CONTENTSHARE_VALIDATION", "WEBSITE_VNET_ROUTE_ALL"}
# The regions that offer Flex Consumption, as the official quickstart allows them
# (Azure-Samples/functions-quickstart-python-http-azd infra/main.bicep at 7ed4638,
# 2025-11-24), written out here independently of main.bicep.
FLEX_REGIONS = [
    "australiaeast", "australiasoutheast", "brazilsouth", "canadacentral", "centralindia",
    "centralus", "eastasia", "eastus", "eastus2", "eastus2euap", "francecentral",
    "germanywestcentral", "italynorth", "japaneast", "koreacentral", "northcentralus",
    "northeurope", "norwayeast", "southafricanorth", "southcentralus", "southeastasia",
    "southindia", "spaincentral", "swedencentral", "uaenorth", "uksouth", "ukwest",
    "westcentralus", "westeurope", "westus", "westus2", "westus3"]

Infra = dict[str, dict[str, Any]]


@cache
def _parse_text(text: str) -> dict[str, Any]:
    return cast(dict[str, Any], BicepParser(cache=False).parse(text=text))


def parse_infra(root: Path) -> Infra:
    """Every .bicep file under root, parsed, by relative path; and main.parameters.json."""
    infra = {p.relative_to(root).as_posix(): _parse_text(p.read_text())
             for p in root.rglob("*.bicep")}
    infra["main.parameters.json"] = json.loads((root / "main.parameters.json").read_text())
    return infra


def _module_params(infra: Infra, file: str, module: str) -> dict[str, Any]:
    return cast(dict[str, Any], _body(infra[file]["modules"][module])["params"])


def _flat_settings(value: Any) -> set[str]:
    """Every key of an app-settings expression (object, union(...), cond ? {} : {})."""
    if isinstance(value, dict) and "function" in value:
        return set().union(*(_flat_settings(a) for a in value["function"]["parameters"].values()))
    if isinstance(value, dict) and "operator" in value:
        ops = value["operator"]["operands"]
        return _flat_settings(ops["true_value"]) | _flat_settings(ops["false_value"])
    return set(value) if isinstance(value, dict) else set()


def _site_problems(infra: Infra) -> list[str]:
    problems = []
    site = _module_params(infra, "app/api.bicep", "api")
    config = site.get("siteConfig", {})
    for key in sorted(set(config) & FLEX_REJECTED_SITE_CONFIG):
        problems.append(f"site: siteConfig.{key} is on Flex Consumption's deprecation list")
    for key in sorted(set(config) - set(FLEX_SITE_CONFIG) - FLEX_REJECTED_SITE_CONFIG):
        problems.append(f"site: siteConfig.{key} not checked against Flex's list")
    if config.get("minTlsVersion") != "1.2":
        problems.append(f"site: minTlsVersion is {config.get('minTlsVersion')!r}, not '1.2'")
    if site.get("httpsOnly") is not True:
        problems.append("site: httpsOnly is not true")
    policies = {p["name"]: p["allow"] for p in site.get("basicPublishingCredentialsPolicies", [])}
    if policies != {"ftp": False, "scm": False}:
        problems.append(f"site: basic publishing credentials not both off: {policies}")
    settings = _flat_settings(infra["app/api.bicep"]["variables"]["appSettings"]["value"])
    for name in sorted(settings & FLEX_REJECTED_SETTINGS):
        problems.append(f"app setting {name} is one Flex Consumption rejects")
    return problems


def _storage_problems(infra: Infra) -> list[str]:
    storage = _module_params(infra, "main.bicep", "storage")
    want = {"allowSharedKeyAccess": False, "allowBlobPublicAccess": False,
            "minimumTlsVersion": "TLS1_2", "supportsHttpsTrafficOnly": True,
            "defaultToOAuthAuthentication": True, "publicNetworkAccess": "publicNetworkAccess",
            "networkAcls": "networkAcls"}
    problems = [f"storage: {k} is {storage.get(k)!r}, not {v!r}"
                for k, v in want.items() if storage.get(k) != v]
    main = infra["main.bicep"]["variables"]
    # VNet mode: no public access unless one address is allowed, and then only it.
    expected_access = {"operator": {"type": "conditional", "operands": {
        "condition": {"operator": {"type": "and", "operands": {
            "operand_1": "vnetEnabled",
            "operand_2": {"function": {"type": "empty",
                                       "parameters": {"item_to_test": "allowedIpAddress"}}}}}},
        "true_value": "Disabled", "false_value": "Enabled"}}}
    if main["publicNetworkAccess"]["value"] != expected_access:
        problems.append("storage/key vault: publicNetworkAccess is not Disabled in VNet mode")
    acls = main["networkAcls"]["value"]["operator"]["operands"]["true_value"]
    if (acls.get("defaultAction"), acls.get("bypass")) != ("Deny", "None"):
        problems.append(f"storage: VNet-mode network ACLs don't deny by default: {acls}")
    return problems


def _monitoring_and_vault_problems(infra: Infra) -> list[str]:
    problems = []
    if _module_params(infra, "main.bicep", "monitoring").get("disableLocalAuth") is not True:
        problems.append("application insights: local auth is not off")
    vault = _module_params(infra, "main.bicep", "keyVault")
    if vault.get("enableRbacAuthorization") is not True:
        problems.append("key vault: RBAC authorization is not on")
    if vault.get("publicNetworkAccess") != "publicNetworkAccess":
        problems.append(f"key vault: publicNetworkAccess is {vault.get('publicNetworkAccess')!r},"
                        " not private in VNet mode")
    endpoints = infra["app/storage-PrivateEndpoint.bicep"]["modules"]
    link = _body(endpoints["keyVaultPrivateEndpoint"])["params"]["privateLinkServiceConnections"]
    if link[0]["properties"]["groupIds"] != ["vault"]:
        problems.append("key vault: no private endpoint in VNet mode")
    if _module_params(infra, "main.bicep", "storagePrivateEndpoint").get(
            "keyVaultName") != "keyVaultName":
        problems.append("key vault: its private endpoint is not given the vault")
    return problems


def _principal_problems(infra: Infra) -> list[str]:
    problems = []
    rbac = infra["app/rbac.bicep"]
    for name, resource in rbac["resources"].items():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        props = _body(resource)["properties"]
        want = {"managedIdentityPrincipalId": "ServicePrincipal",
                "userIdentityPrincipalId": "userIdentityPrincipalType"}[props["principalId"]]
        if props.get("principalType") != want:
            problems.append(f"role assignment {name}: principalType {props.get('principalType')!r}"
                            f", not {want!r}")
    main = infra["main.bicep"]
    if _module_params(infra, "main.bicep", "rbac").get("userIdentityPrincipalType") != (
            "principalType"):
        problems.append("rbac: the deploying principal's type is not passed on")
    if main["parameters"]["principalType"].get("default") != "User":
        problems.append("principalType: no default 'User'")
    value = infra["main.parameters.json"]["parameters"].get("principalType", {}).get("value")
    if value != "${AZURE_PRINCIPAL_TYPE=User}":
        problems.append(f"principalType is not taken from azd's AZURE_PRINCIPAL_TYPE: {value!r}")
    return problems


def _location_problems(infra: Infra) -> list[str]:
    decorators = infra["main.bicep"]["parameters"]["location"]["decorators"]
    allowed = [d["argument"] for d in decorators if d["type"] == "allowed"]
    if allowed != [FLEX_REGIONS]:
        return [f"location: allowed regions are {allowed}, not the Flex Consumption list"]
    return []


def _telemetry_problems(infra: Infra) -> list[str]:
    problems = []
    for file, parsed in infra.items():
        for name, module in parsed.get("modules", {}).items():
            if module["type"] == "bicep_registry_alias" and (
                    _body(module)["params"].get("enableTelemetry") is not False):
                problems.append(f"{file}: module {name} doesn't set enableTelemetry: false")
    return problems


def _refusal_problems(infra: Infra) -> list[str]:
    main = infra["main.bicep"]
    problems = []
    name = _body(main["resources"]["rg"])["name"]
    if name != {"operator": {"type": "conditional", "operands": {
            "condition": {"function": {"type": "empty",
                                       "parameters": {"item_to_test": "refusal"}}},
            "true_value": "resourceGroupNameOrDefault",
            "false_value": {"function": {"type": "fail", "parameters": {"arg_1": "refusal"}}}}}}:
        problems.append("refusals: the resource group doesn't fail() on a refusal")
    variables = main["variables"]
    if variables["singleTenantWithoutAppId"]["value"] != {"operator": {"type": "and", "operands": {
            "operand_1": "botUsesAppRegistration",
            "operand_2": {"function": {"type": "empty",
                                       "parameters": {"item_to_test": "botAppId"}}}}}}:
        problems.append("refusals: SingleTenant without BOT_APP_ID is not refused")
    if "azd env set BOT_APP_ID" not in variables["singleTenantRefusal"]["value"]:
        problems.append("refusals: the SingleTenant refusal doesn't say what to set")
    refusal = variables["refusal"]["value"]["operator"]["operands"]
    if (refusal["condition"], refusal["true_value"]) != (
            "singleTenantWithoutAppId", "singleTenantRefusal") or refusal["false_value"][
            "operator"]["operands"]["condition"] != "governmentCloud":
        problems.append("refusals: refusal doesn't combine the two refusals")
    return problems


def _cloud_problems(infra: Infra) -> list[str]:
    """GCC: the Teams channel serves Teams Government; GCC High and DoD are refused
    (their bots live in Azure Government, which this template doesn't deploy to)."""
    problems = []
    channel = _body(infra["app/bot.bicep"]["resources"]["teams"])["properties"]["properties"]
    if channel.get("deploymentEnvironment") != {"operator": {"type": "conditional", "operands": {
            "condition": {"operator": {"type": "equals", "operands": {
                "operand_1": "proactiveCloud", "operand_2": "GCC"}}},
            "true_value": "GCCModerateDeployment", "false_value": "CommercialDeployment"}}}:
        problems.append("bot: the Teams channel's deploymentEnvironment doesn't follow GCC")
    if _module_params(infra, "main.bicep", "bot").get("proactiveCloud") != "proactiveCloud":
        problems.append("bot: PROACTIVE_CLOUD is not passed to the bot")
    government = infra["main.bicep"]["variables"]["governmentCloud"]["value"]
    if government != {"operator": {"type": "or", "operands": {
            "operand_1": {"operator": {"type": "equals", "operands": {
                "operand_1": "proactiveCloud", "operand_2": "GCCHigh"}}},
            "operand_2": {"operator": {"type": "equals", "operands": {
                "operand_1": "proactiveCloud", "operand_2": "DoD"}}}}}}:
        problems.append(f"refusals: GCC High and DoD are not both refused: {government}")
    return problems


def infra_problems(infra: Infra) -> list[str]:
    """What would make a first `azd up` fail or half-work; empty when none."""
    return (_site_problems(infra) + _storage_problems(infra)
            + _monitoring_and_vault_problems(infra) + _principal_problems(infra)
            + _location_problems(infra) + _telemetry_problems(infra) + _refusal_problems(infra)
            + _cloud_problems(infra))


def test_the_infra_has_none_of_the_known_traps() -> None:
    assert infra_problems(parse_infra(INFRA)) == []


# Each defect put back into a copy of infra/: (file, text, replacement, what the gate says).
DEFECTS = {
    "ftpsState back": ("app/api.bicep", "      minTlsVersion: '1.2'\n",
                       "      minTlsVersion: '1.2'\n      ftpsState: 'Disabled'\n",
                       "siteConfig.ftpsState is on Flex"),
    "alwaysOn back": ("app/api.bicep", "      http20Enabled: true\n",
                      "      http20Enabled: true\n      alwaysOn: false\n",
                      "siteConfig.alwaysOn is on Flex"),
    "an unchecked siteConfig property": (
        "app/api.bicep", "      http20Enabled: true\n",
        "      http20Enabled: true\n      webSocketsEnabled: false\n",
        "siteConfig.webSocketsEnabled not checked"),
    "site TLS 1.0": ("app/api.bicep", "minTlsVersion: '1.2'", "minTlsVersion: '1.0'",
                     "site: minTlsVersion is '1.0'"),
    "site HTTP allowed": ("app/api.bicep", "httpsOnly: true", "httpsOnly: false",
                          "site: httpsOnly"),
    "FTP publishing on": ("app/api.bicep", "name: 'ftp'\n        allow: false",
                          "name: 'ftp'\n        allow: true", "basic publishing credentials"),
    "FUNCTIONS_WORKER_RUNTIME": ("app/api.bicep", "  OUTBOX_QUEUE: outboxQueueName\n",
                                 "  OUTBOX_QUEUE: outboxQueueName\n"
                                 "  FUNCTIONS_WORKER_RUNTIME: 'python'\n",
                                 "app setting FUNCTIONS_WORKER_RUNTIME"),
    "FUNCTIONS_EXTENSION_VERSION": ("app/api.bicep", "  OUTBOX_QUEUE: outboxQueueName\n",
                                    "  OUTBOX_QUEUE: outboxQueueName\n"
                                    "  FUNCTIONS_EXTENSION_VERSION: '~4'\n",
                                    "app setting FUNCTIONS_EXTENSION_VERSION"),
    "WEBSITE_RUN_FROM_PACKAGE": ("app/api.bicep", "  OUTBOX_QUEUE: outboxQueueName\n",
                                 "  OUTBOX_QUEUE: outboxQueueName\n"
                                 "  WEBSITE_RUN_FROM_PACKAGE: '1'\n",
                                 "app setting WEBSITE_RUN_FROM_PACKAGE"),
    "content share in the conditional settings": (
        "app/api.bicep", "}, empty(keyVaultName) ? {} : {\n",
        "}, empty(keyVaultName) ? {\n  WEBSITE_CONTENTSHARE: name\n} : {\n",
        "app setting WEBSITE_CONTENTSHARE"),
    "shared keys on": ("main.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true",
                       "storage: allowSharedKeyAccess"),
    "public blobs": ("main.bicep", "allowBlobPublicAccess: false", "allowBlobPublicAccess: true",
                     "storage: allowBlobPublicAccess"),
    "storage TLS 1.0": ("main.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'",
                        "storage: minimumTlsVersion"),
    "storage over HTTP": ("main.bicep", "supportsHttpsTrafficOnly: true",
                          "supportsHttpsTrafficOnly: false", "storage: supportsHttpsTrafficOnly"),
    "storage public in VNet mode": ("main.bicep", "? 'Disabled' : 'Enabled'",
                                    "? 'Enabled' : 'Enabled'", "not Disabled in VNet mode"),
    "storage allows all in VNet mode": ("main.bicep", "  defaultAction: 'Deny'\n  bypass: 'None'",
                                        "  defaultAction: 'Allow'\n  bypass: 'None'",
                                        "don't deny by default"),
    "App Insights local auth": ("main.bicep", "disableLocalAuth: true", "disableLocalAuth: false",
                                "local auth is not off"),
    "Key Vault public in VNet mode": ("main.bicep", "    publicNetworkAccess: publicNetworkAccess\n"
                                      "    networkAcls: vnetEnabled",
                                      "    publicNetworkAccess: 'Enabled'\n"
                                      "    networkAcls: vnetEnabled",
                                      "key vault: publicNetworkAccess"),
    "Key Vault access policies": ("main.bicep", "enableRbacAuthorization: true",
                                  "enableRbacAuthorization: false", "RBAC authorization"),
    "Key Vault endpoint not given the vault": ("main.bicep", "    keyVaultName: keyVaultName\n  }\n"
                                               "  dependsOn", "  }\n  dependsOn",
                                               "not given the vault"),
    "principalType hard-coded": ("app/rbac.bicep", "principalType: userIdentityPrincipalType",
                                 "principalType: 'User'", "principalType 'User'"),
    "principal type not from azd": ("main.parameters.json", "${AZURE_PRINCIPAL_TYPE=User}",
                                    "User", "AZURE_PRINCIPAL_TYPE"),
    "any region": ("main.bicep", "  'westus3'\n])\n@metadata", "  'westus3'\n  'westindia'\n])\n"
                   "@metadata", "location: allowed regions"),
    "AVM telemetry on": ("app/vnet.bicep", "    enableTelemetry: false\n", "",
                         "module virtualNetwork doesn't set enableTelemetry"),
    "no refusal": ("main.bicep", ": fail(refusal)", ": resourceGroupNameOrDefault",
                   "doesn't fail() on a refusal"),
    "SingleTenant without id not refused": (
        "main.bicep", "botUsesAppRegistration && empty(botAppId)",
        "botUsesAppRegistration && empty(botAppTenantId)", "SingleTenant without BOT_APP_ID"),
    "GCC channel on the commercial Teams": ("app/bot.bicep", "? 'GCCModerateDeployment'",
                                            "? 'CommercialDeployment'",
                                            "deploymentEnvironment doesn't follow GCC"),
    "DoD not refused": ("main.bicep", " || (proactiveCloud == 'DoD')", "",
                        "GCC High and DoD are not both refused"),
}


def test_each_defect_put_back_is_flagged(tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    shutil.copytree(INFRA, pristine)
    for label, (file, old, new, expected) in DEFECTS.items():
        copy = tmp_path / label.replace(" ", "-")
        shutil.copytree(pristine, copy)
        text = (copy / file).read_text()
        assert text.count(old) >= 1, (label, old)
        (copy / file).write_text(text.replace(old, new, 1))
        problems = infra_problems(parse_infra(copy))
        assert any(expected in p for p in problems), (label, problems)


def test_the_page_sign_in_is_an_option_that_leaves_the_bot_and_the_api_reachable() -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["pageSignInClientId"]["value"] == "${PAGE_SIGN_IN_CLIENT_ID=}"
    assert bicep("main.bicep")["parameters"]["pageSignInClientId"]["default"] == ""
    resource = bicep("app/api.bicep")["resources"]["pageSignIn"]
    assert resource["type"] == "Microsoft.Web/sites/config"
    condition = resource["config"]["condition"]["operator"]
    assert condition["type"] == "not"  # only when a client id is given
    body = resource["config"]["config"]
    assert body["name"] == "authsettingsV2"
    props = body["properties"]
    # Anonymous requests still reach the app: Teams' activities and the producers'
    # keyed API don't sign in; the app checks the page's users itself.
    assert props["globalValidation"] == {"requireAuthentication": False,
                                         "unauthenticatedClientAction": "AllowAnonymous"}
    aad = props["identityProviders"]["azureActiveDirectory"]
    assert aad["registration"]["clientId"] == "pageSignInClientId"
    assert "clientSecretSettingName" not in aad["registration"]  # keyless
