"""Who stopped which notifications: recorded, made known to every instance,
and checked on the send path without a storage operation per message.

The opt-outs themselves are rows of the `preferences` table
(storage/preferences.py). Reading a recipient's rows before every send cost
a storage operation per message — a third of a single send's cost — to find
nothing nearly every time. So an instance learns *that* a tenant's opt-outs
changed from the row it already shares with every other instance sending to
that tenant: the tenant's budget row (delivering/pacing.py), which it writes,
ETag-conditionally, every 0.2–1 s while it sends there.

- A change (`stop`, `start`, the card's button, `python -m proactive
  optout/optin`) writes the preference first, then stamps a new `optOuts`
  value on the budget row of the user's tenant. Every other instance's next
  reservation for that tenant conflicts with the stamp, reads the row again
  and sees it; this process sees it at once.
- A send checks after it has its pacing slot (`check`). In a tenant whose
  row carries no stamp nobody has opted out: nothing is read. Otherwise the
  user's rows are read once per stamp value and remembered (per process,
  bounded), so a stop or start anywhere in the tenant is read afresh.

A stop therefore holds for every send whose pacing slot is reserved after
it: at once on the instance that took it, within a reservation (0.2 s at
full rate, at most `max_wait` + 1 s) on the others — about the window of the
read-before-claim it replaces, which read before the claim and the pacing
wait. A stamp lost to a crash after the preference write is written again
when the user repeats the command (each change stamps, new or not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proactive.storage.preferences import ALL, OptOut, stopping

if TYPE_CHECKING:
    from proactive.delivering.pacing import TenantPacer
    from proactive.storage.preferences import PreferenceStore

STAMP = "optOuts"
# Users whose opt-outs a process remembers, over all tenants (then it forgets
# them all and reads again): a few hundred bytes each, so about 2 MB at most,
# the same for any audience. A broadcast reaches each user once, so what a
# bigger memory would keep is rarely asked for again.
REMEMBERED = 8_192


class OptOuts:
    def __init__(self, store: PreferenceStore, pacer: TenantPacer) -> None:
        self.store = store
        self.pacer = pacer
        # tenant -> (the stamp they were read under, user -> their opt-outs)
        self._known: dict[str, tuple[str, dict[str, tuple[OptOut, ...]]]] = {}
        self._count = 0

    async def stop(self, aad_id: str, topic: str = ALL, *, via: str, tenant_id: str) -> bool:
        """Record that the user stops `topic` ("*": everything) and tell every
        instance. False when that opt-out already stood."""
        new = await self.store.opt_out(aad_id, topic, via=via, tenant_id=tenant_id)
        await self.pacer.stamp(tenant_id, STAMP)
        return new

    async def start(self, aad_id: str, topic: str | None = None, *,
                    tenant_id: str = "") -> list[str]:
        """Clear the user's opt-out of `topic`, or all of theirs (None), and
        tell every instance. Returns the topics cleared."""
        tenants = {o.tenant_id.lower() for o in await self.store.of_user(aad_id)} | {
            tenant_id.lower()}
        cleared = await self.store.opt_in(aad_id, topic)
        for tenant in sorted(tenants - {""}):
            await self.pacer.stamp(tenant, STAMP)
        return cleared

    async def check(self, tenant: str, aad_id: str, topic: str) -> OptOut | None:
        """The opt-out that stops a message of `topic` to this user, or None.
        Call it after the send's pacing slot is taken (see above)."""
        stamp = self.pacer.seen(tenant, STAMP)
        if not stamp:
            return None  # nobody in this tenant has opted out
        known = self._known.get(tenant.lower())
        if known is None or known[0] != stamp:
            self._count -= len(known[1]) if known else 0
            known = self._known[tenant.lower()] = (stamp, {})
        users = known[1]
        user = aad_id.lower()
        if user not in users:
            if self._count >= REMEMBERED:
                self._known = {tenant.lower(): known}
                users.clear()
                self._count = 0
            users[user] = tuple(await self.store.of_user(aad_id))
            self._count += 1
        return stopping(users[user], topic)
