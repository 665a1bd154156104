"""op `install`: the app installed for one user of an audience, nothing sent
(README "Pre-installing for an audience").

The audience is split and paced exactly like a send (delivering/broadcast.py);
this is the per-user step in place of `send_one`, with the same claim, so each
user is installed once under the key however often a part is delivered. A user
with a usable conversation is not asked about: the app is there
(`already-installed`, no Graph call). Otherwise the app is installed through
Graph (409: `already-installed`), and the new chat is stored as the user's
reference, so the first send to them later needs no install.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from proactive.contract import Target
from proactive.delivering.outcomes import Action, Outcome, outcome_of
from proactive.errors import (
    Busy,
    DeliveryFailed,
    InvalidMessage,
    Poison,
    Reason,
    RetryLater,
    StorageUnavailable,
)
from proactive.storage.deliveries import Claim
from proactive.storage.reference_keys import InstallState
from proactive.storage.states import DeliveryState

if TYPE_CHECKING:
    from proactive.runtime import Runtime

log = logging.getLogger(__name__)

INSTALLED = "installed"
ALREADY_INSTALLED = "already-installed"


def check_enabled(rt: Runtime) -> None:
    """An install message when the deployment can't install: parked, not retried."""
    if not rt.settings.graph_install:
        raise InvalidMessage(Poison.INSTALL_DISABLED,
                             "op 'install' needs proactive install through Microsoft Graph: "
                             "set PROACTIVE_GRAPH_APP_CATALOG_ID or "
                             "PROACTIVE_GRAPH_APP_MANIFEST_ID")


async def install_one(rt: Runtime, key: str, target: Target) -> Outcome:
    """Make sure the app is installed for one user, once under the key: claim,
    install (or find it installed), record `installed` with the reason."""
    from proactive.delivering.send import _check_tenant, _put_back, record_failure

    try:
        claim = await rt.deliveries.claim(key, target.recipient)
    except (Busy, StorageUnavailable) as exc:  # nothing was done
        return outcome_of(exc, 1)
    if not isinstance(claim, Claim):
        return Outcome(Action.DONE, Reason.DUPLICATE)
    tenant = target.tenant or rt.settings.app_tenant_id
    # Graph answered 201 to an earlier attempt of this delivery, whose next
    # step failed: its 409 now is still this key's install, not an earlier one.
    noted: dict[str, bool] = {"graphInstalled": bool(claim.entity.get("graphInstalled"))}
    try:
        _check_tenant(rt, tenant)
        reason, fields = await _install(rt, target.id, tenant, noted)
    except StorageUnavailable as exc:
        return await _put_back(rt, claim, exc)
    except (DeliveryFailed, RetryLater) as exc:
        extra: dict[str, Any] = {"graphInstalled": True} if noted["graphInstalled"] else {}
        return await record_failure(rt, claim, exc, what="install", **extra)
    await rt.deliveries.finish(claim, DeliveryState.INSTALLED, reason=reason, **fields)
    return Outcome(Action.DONE, reason)


async def _install(rt: Runtime, aad_id: str, tenant: str,
                   noted: dict[str, bool]) -> tuple[str, dict[str, str]]:
    from proactive.delivering.install import install_for

    ref = await rt.references.user(aad_id, tenant or None)
    if ref is not None and ref.conversation_id and ref.state != InstallState.UNINSTALLED:
        # The bot has its chat: the app is there (installed by an earlier
        # attempt of this delivery, when Graph said 201 to it).
        reason = INSTALLED if noted["graphInstalled"] else ALREADY_INSTALLED
    else:
        ref, installed = await install_for(
            rt, aad_id, tenant, on_installed=lambda: noted.update(graphInstalled=True),
            known=ref)
        reason = INSTALLED if installed or noted["graphInstalled"] else ALREADY_INSTALLED
    return reason, {"conversationId": ref.conversation_id, "serviceUrl": ref.service_url,
                    "tenantId": ref.tenant_id}
