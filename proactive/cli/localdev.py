"""What `./scripts/dev` tells the CLI: the Agents Playground's tenant, the
default tenant of a local `--all-users` send (README "Two commands").

The launcher writes .dev/playground.json when the Playground is up; the CLI
reads it from the working directory (like local.settings.json) and only when
its storage is local (Azurite), so nothing here can apply to a deployment.
"""

from __future__ import annotations

import json
from pathlib import Path

from proactive.cli.fail import is_local
from proactive.config import Settings

PLAYGROUND = Path(".dev") / "playground.json"


def playground_tenant(settings: Settings, path: Path = PLAYGROUND) -> str:
    """The Playground's tenant id, when storage is Azurite and the launcher
    recorded one; else ""."""
    from proactive.cli.storage import storage_endpoints

    if settings.storage_by_identity or not is_local(storage_endpoints(settings)["table"]):
        return ""
    try:
        tenant = json.loads(path.read_text(encoding="utf-8")).get("tenantId")
    except (OSError, ValueError, AttributeError):
        return ""
    return tenant if isinstance(tenant, str) else ""


def record(user: dict[str, str], path: Path) -> None:
    """The launcher's side: the Playground's tenant and user, for the CLI."""
    path.write_text(json.dumps({"tenantId": user["tenant"], "aadObjectId": user["aad"],
                                "name": user["name"]}) + "\n", encoding="utf-8")
