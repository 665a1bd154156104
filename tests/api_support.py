"""The function app in the built-in host as a child process, keys required,
its queue worker and timer off so tests can read what the API enqueued."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from proactive.config import Settings
from proactive_devtools.processes import Azurite, free_port, stop_process, wait_for_port

REPO_ROOT = Path(__file__).resolve().parent.parent
_FOREIGN = ("MicrosoftApp", "PROACTIVE_", "AzureWebJobs", "OUTBOX_QUEUE", "FUNCTIONS_",
            "LOCAL_HOST_")


@dataclass
class ApiApp:
    base: str  # http://127.0.0.1:<port>/api/
    key: str
    settings: Settings  # the app's storage, queue and tables
    log: Path


@contextmanager
def api_app(azurite: Azurite, workdir: Path, **extra: str) -> Iterator[ApiApp]:
    tag, key = uuid.uuid4().hex[:10], "k-" + uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
    env.update({"AzureWebJobsStorage": azurite.connection_string, "OUTBOX_QUEUE": f"api{tag}",
                "PROACTIVE_TABLE_PREFIX": f"api{tag}", "PROACTIVE_LOCAL_DEV": "true",
                "LOCAL_HOST_FUNCTION_KEYS": key, "AzureWebJobs.outbox.Disabled": "true",
                "AzureWebJobs.schedules.Disabled": "true", "PYTHONUNBUFFERED": "1", **extra})
    settings_file = workdir / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
    port, log = free_port(), workdir / "app.log"
    with open(log, "ab") as out:
        host = subprocess.Popen(
            [sys.executable, "-m", "proactive", "host", "--port", str(port),
             "--settings", str(settings_file)],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, proc=host)
        yield ApiApp(f"http://127.0.0.1:{port}/api/", key,
                     Settings(storage_connection=azurite.connection_string,
                              outbox_queue=f"api{tag}", table_prefix=f"api{tag}",
                              local_dev=True), log)
    finally:
        stop_process(host, sig=signal.SIGTERM)
