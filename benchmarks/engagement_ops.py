"""Storage operations of a read receipt and of an acknowledgement press,
counted by Azurite itself (its debug log, as benchmarks/storage_ops.py counts
sends). In process: a user with the bot installed gets 50 messages through
the Connector emulator; then one read receipt covering all 50 is posted to
/api/messages (handle_activity, local development mode), then one press of
the ack button of a send that asked for it. Targets: the receipt writes once
(whatever it covers) and reads nothing per delivery; the press is one point
read and one write of the delivery row, plus the read of the card to show.

    .venv/bin/python -m benchmarks.engagement_ops
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks._common import azurite_ops, emulator_process, header, machine_line, note, op_kind
from benchmarks.storage_ops import settled_size

MESSAGES = 50
RECEIPT_WRITES = 1
WRITES = ("insert", "replace", "merge", "batch", "delete")


def _writes(kinds: Counter[str]) -> int:
    return sum(n for kind, n in kinds.items() if kind.rsplit(" ", 1)[-1] in WRITES
               and not kind.startswith("queue "))


async def measure(azurite: Any, log: Path, emulator_url: str) -> dict[str, Counter[str]]:
    from benchmarks.whole_path import app_settings
    from proactive.config import Settings
    from proactive.receiving.activities import parse_activity
    from proactive.receiving.endpoint import handle_activity
    from proactive.runtime import Runtime
    from proactive.worker import process
    from proactive_devtools.provision import provision
    from proactive_devtools.user import User

    tag = uuid.uuid4().hex[:8]
    settings = Settings.from_env(app_settings(azurite.connection_string, tag, 50, emulator_url))
    await provision(settings)
    rt = await Runtime.create(settings)
    aad, tenant = str(uuid.uuid4()), str(uuid.uuid4())
    megan = User(aad_id=aad, tenant_id=tenant, conversation_id=f"a:1{tag}",
                 bot_id="28:bench-bot", service_url=emulator_url)
    results: dict[str, Counter[str]] = {}
    try:
        await rt.references.record(parse_activity(
            megan._activity("installationUpdate", action="add")))
        last = ""
        for n in range(MESSAGES):
            await process(rt, json.dumps({"version": 1, "op": "send", "key": f"m{tag}-{n}",
                                          "to": {"user": aad, "tenant": tenant},
                                          "text": f"message {n}", "ack": n == MESSAGES - 1}),
                          message_id=f"m{n}")
            row = await rt.deliveries.by_key(f"m{tag}-{n}")
            last = str(row[0][0].activity_id)
        for name, activity in (("read receipt covering 50 messages", megan.read_receipt(last)),
                               ("ack press", megan.ack_press(f"m{tag}-{MESSAGES - 1}"))):
            start = await settled_size(log)
            reply = await handle_activity(rt, {}, json.dumps(activity).encode())
            assert reply.status == 200, reply
            await settled_size(log)
            ops, _ = azurite_ops(log, start, prefix=f"b{tag}")
            results[name] = Counter(op_kind(*op) for op in ops)
    finally:
        await rt.close()
    return results


async def run() -> dict[str, Counter[str]]:
    from proactive_devtools.processes import start_azurite

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "azurite-debug.log"
        azurite = start_azurite(debug_log=log)
        try:
            with emulator_process() as emulator:
                return await measure(azurite, log, emulator.url)
        finally:
            azurite.stop()


def report(results: dict[str, Counter[str]]) -> None:
    for name, kinds in results.items():
        total, writes = sum(kinds.values()), _writes(kinds)
        target = f" (target: {RECEIPT_WRITES} write)" if name.startswith("read") else ""
        print(f"  {name}: {total} storage operations, {writes} write(s){target}")
        note(f"    {', '.join(f'{k} x{n}' for k, n in sorted(kinds.items()))}")


def main() -> int:
    import logging

    logging.getLogger("proactive").setLevel(logging.ERROR)
    header("Storage operations of a read receipt and of an acknowledgement, counted by Azurite")
    note(machine_line())
    results = asyncio.run(run())
    report(results)
    receipt = next(v for k, v in results.items() if k.startswith("read"))
    return 0 if _writes(receipt) == RECEIPT_WRITES else 1


if __name__ == "__main__":
    raise SystemExit(main())
