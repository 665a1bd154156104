"""Where the app runs: the variables that show an Azure (or other hosted)
instance, so that nothing meant for local development can be switched on
there (SECURITY.md "Hosting markers"). Imported by config; nothing heavy."""

from __future__ import annotations

from collections.abc import Mapping

# Variables the platform sets in every Azure Functions / App Service instance
# and that nothing sets on a developer's machine (not Core Tools, the built-in
# local host or the tests). Any one of them means "running in Azure". Sources:
# the App Service environment reference (WEBSITE_*), the Functions host's
# EnvironmentSettingNames (App Service: WEBSITE_INSTANCE_ID; Flex consumption:
# LEGION_SERVICE_HOST; Kubernetes / Container Apps: WEBSITE_POD_NAME,
# CONTAINER_APP_NAME) and FUNCTIONS_EXTENSION_VERSION, the app setting every
# Function App has. KUBERNETES_SERVICE_HOST: Kubernetes sets it in every pod
# (Functions on AKS with KEDA, Container Apps, Arc): a hosted instance, where
# local development must not be switched on either, whoever runs the cluster.
AZURE_VARIABLES = (
    "WEBSITE_INSTANCE_ID",
    "WEBSITE_SITE_NAME",
    "APPSETTING_WEBSITE_SITE_NAME",
    "WEBSITE_HOSTNAME",
    "WEBSITE_OWNER_NAME",
    "WEBSITE_RESOURCE_GROUP",
    "WEBSITE_SKU",
    "LEGION_SERVICE_HOST",
    "WEBSITE_POD_NAME",
    "CONTAINER_APP_NAME",
    "FUNCTIONS_EXTENSION_VERSION",
    "KUBERNETES_SERVICE_HOST",
)
# Set in Azure too, but also elsewhere, so they count only together with a
# WEBSITE_* variable: CONTAINER_NAME (Linux consumption; also set by dev
# containers and CI runners), IDENTITY_ENDPOINT / MSI_ENDPOINT (managed
# identity; also Azure Arc on ordinary machines).
AZURE_IF_WEBSITE = ("CONTAINER_NAME", "IDENTITY_ENDPOINT", "MSI_ENDPOINT")


def azure_marker(env: Mapping[str, str]) -> str:
    """The variable(s) that show `env` is an Azure instance, or "" when none does."""
    for name in AZURE_VARIABLES:
        if (env.get(name) or "").strip():
            return name
    website = sorted(n for n, v in env.items() if n.startswith("WEBSITE_") and v.strip())
    for name in AZURE_IF_WEBSITE:
        if (env.get(name) or "").strip() and website:
            return f"{name} and {website[0]}"
    return ""


def running_in_azure(env: Mapping[str, str]) -> bool:
    """True when `env` is an Azure instance's environment (see AZURE_VARIABLES)."""
    return bool(azure_marker(env))
