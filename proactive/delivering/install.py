"""Reaching users through Microsoft Graph: paced calls, principal names, and
proactive install (README "Proactive install").

Every Graph call goes through `graph_call`: paced per tenant in rows of its own
(Graph's Teams limit, 30 requests/s per app per tenant, shared by every
instance through the same TenantPacer as the Connector's budget), a 429 fed
back into that tenant's rate and raised as Throttled, so the message comes back
after Retry-After while other tenants go on.

For a user with no conversation the bot can use, when the deployment enables
it: install the app for the user (409: installed already), read the
installation's chat id, store it as the user's reference, and the send goes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, TypeVar

from proactive.errors import Permanent, Reason, ServiceUnavailable, Throttled

if TYPE_CHECKING:
    from proactive.runtime import Runtime
    from proactive.storage.references import Reference
    from proactive.teams.graph import DirectoryUser, GraphClient

T = TypeVar("T")
# Catalog ids looked up by manifest id, per process (they never change).
_CATALOG: dict[str, str] = {}
# Set by a send whose audience Graph refused the app for (the permission is
# missing or not consented, `graph-permission`): the detail, and no install is
# asked of Graph again for that send (broadcast.py sets it per part).
REFUSED: ContextVar[dict[str, str] | None] = ContextVar("graph_refused", default=None)


async def graph_call(rt: Runtime, tenant: str, request: Callable[[GraphClient], Awaitable[T]]
                     ) -> T:
    """One Graph call, paced for the tenant. Raises members of proactive.errors;
    pacing.Defer when the tenant's Graph budget is spent for a while."""
    if rt.graph is None or rt.graph_pacer is None:
        raise Permanent(Reason.NO_CREDENTIALS, "Microsoft Graph needs the bot's credentials")
    budget = f"graph:{tenant}"  # its own budget row, apart from the Connector's
    await rt.graph_pacer.acquire(budget)
    try:
        return await request(rt.graph)
    except Throttled:
        await rt.graph_pacer.throttled(budget)
        raise


async def directory_user(rt: Runtime, tenant: str, upn: str) -> DirectoryUser | None:
    """The user by principal name (object id, enabled, guest); None if there is none."""
    return await graph_call(rt, tenant, lambda graph: graph.user(upn))


async def catalog_id(rt: Runtime, tenant: str) -> str:
    settings = rt.settings
    if settings.graph_app_catalog_id:
        return settings.graph_app_catalog_id
    manifest = settings.graph_app_manifest_id
    if manifest not in _CATALOG:
        found = await graph_call(rt, tenant, lambda graph: graph.catalog_id(manifest))
        if found is None:
            raise Permanent(Reason.NOT_INSTALLED, "the app is not in the organization's "
                                                  "catalog (upload the app package)")
        _CATALOG[manifest] = found
    return _CATALOG[manifest]


async def install_reference(rt: Runtime, aad_id: str, tenant: str, *,
                            known: Reference | None = None) -> Reference:
    """Install the app for the user (or find it installed), store the chat as
    the user's reference and return it. `known`: the user's row, which says
    how far an earlier attempt got (it resumes from there)."""
    return (await install_for(rt, aad_id, tenant, known=known))[0]


async def install_for(rt: Runtime, aad_id: str, tenant: str, *,
                      on_installed: Callable[[], None] | None = None,
                      known: Reference | None = None) -> tuple[Reference, bool]:
    """`install_reference`, and whether this call installed the app (False:
    Graph answered 409, installed already, or an earlier attempt did).
    `on_installed` is told as soon as Graph installed it, so a caller whose
    next step fails (the chat is not listed yet, the budget is spent) can
    remember that it was this attempt. Once the installation is read its id
    is stored on the user's row: a later attempt (put off by pacing, or back
    for the chat) resumes from the chat read, never POSTs again."""
    refused = REFUSED.get()
    if refused and refused.get("detail"):
        raise Permanent(Reason.GRAPH_PERMISSION, "not asked of Graph: it refused the app "
                                                 "earlier in this send: " + refused["detail"])
    try:
        return await _install_for(rt, aad_id, tenant, on_installed, known)
    except Permanent as exc:
        if exc.reason == Reason.GRAPH_PERMISSION and refused is not None:
            refused["detail"] = exc.detail  # the rest of the send asks no more
        raise


async def _install_for(rt: Runtime, aad_id: str, tenant: str,
                       on_installed: Callable[[], None] | None,
                       known: Reference | None) -> tuple[Reference, bool]:
    installed = False
    installation = known.installation_id if known else ""
    if not installation:
        app = await catalog_id(rt, tenant)
        if not (known and known.install_posted):
            try:
                installed = await graph_call(rt, tenant,
                                             lambda graph: graph.install(aad_id, app))
            except Permanent as exc:
                if exc.status != 404:
                    raise
                reason = Reason.NOT_FOUND if exc.code == "Request_ResourceNotFound" \
                    else Reason.NOT_INSTALLED
                raise Permanent(reason, f"Graph could not install the app: {exc.detail}",
                                status=exc.status, code=exc.code) from exc
            if installed and on_installed is not None:
                on_installed()
            await rt.references.remember_installation(aad_id, tenant)
        found = await graph_call(rt, tenant, lambda graph: graph.installation(aad_id, app))
        if not found:  # installed a moment ago: Graph lists it shortly
            raise ServiceUnavailable(Reason.NO_CONVERSATION, "installed; Graph does not "
                                                             "list the installation yet")
        installation = found
        await rt.references.remember_installation(aad_id, tenant, installation)
    try:
        chat = await graph_call(rt, tenant, lambda graph: graph.chat_id(aad_id, installation))
    except Permanent as exc:
        if exc.status != 404:
            raise
        chat = ""  # the chat of a new installation appears a little later
    if not chat:
        # Teams creates the installation's chat asynchronously: retried with
        # back-off (a Transient uses up an attempt), then failed saying so.
        raise ServiceUnavailable(Reason.NO_CONVERSATION, "installed; Graph does not list "
                                                         "the installation's chat yet")
    stored = await rt.references.tenant_service_url(tenant)
    service_url = stored[0] if stored and stored[0] else rt.cloud.global_service_url
    bot_id = f"28:{rt.settings.app_id}" if rt.settings.app_id else (stored[1] if stored else "")
    return await rt.references.store_created_conversation(aad_id, tenant, service_url, bot_id,
                                                          chat), installed
