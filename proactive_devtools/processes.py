"""Start and stop the local stand-ins (Azurite, Agents Playground) as child processes.

Used by the one-command dev launcher, the tests and the benchmarks. Nothing
here is deployed logic.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proactive.config import DEV_ACCOUNT, DEV_KEY

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_BIN = REPO_ROOT / "node_modules" / ".bin"

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout: float = 30.0,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def node_tool(name: str) -> str:
    path = NODE_BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run 'npm ci' in {REPO_ROOT}")
    return str(path)


def connection_string(queue_port: int, table_port: int, blob_port: int) -> str:
    base = "http://127.0.0.1"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint={base}:{blob_port}/{DEV_ACCOUNT};"
        f"QueueEndpoint={base}:{queue_port}/{DEV_ACCOUNT};"
        f"TableEndpoint={base}:{table_port}/{DEV_ACCOUNT};"
    )


def tls_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files
    in `folder`), for Azurite over https: clients trust it by being given the
    certificate (SSL_CERT_FILE, REQUESTS_CA_BUNDLE or an ssl context), never by
    turning verification off."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "azurite-cert.pem", folder / "azurite-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class Azurite:
    proc: subprocess.Popen[bytes]
    queue_port: int
    table_port: int
    blob_port: int
    # Where its data lives on disk; None: in memory, gone when it stops.
    location: str | None = None
    log: Path | None = None
    # https with this certificate and key, Entra ID tokens accepted (`oauth=`);
    # the certificate is what clients must trust.
    oauth: tuple[Path, Path] | None = None
    debug_log: Path | None = None

    @property
    def persistent(self) -> bool:
        return self.location is not None

    @property
    def cert(self) -> Path | None:
        return self.oauth[0] if self.oauth else None

    @property
    def connection_string(self) -> str:
        return connection_string(self.queue_port, self.table_port, self.blob_port)

    def endpoint(self, service: str) -> str:
        """The https endpoint of `service` ("queue", "table", "blob") of an
        `oauth=True` Azurite (path-style: the account is the first path segment)."""
        port = {"queue": self.queue_port, "table": self.table_port, "blob": self.blob_port}
        return f"https://127.0.0.1:{port[service]}/{DEV_ACCOUNT}"

    def identity_settings(self) -> dict[str, str]:
        """App settings reaching this Azurite by identity, as the Bicep sets them
        in Azure (minus the client id): no key."""
        return {"AzureWebJobsStorage__credential": "managedidentity",
                "AzureWebJobsStorage__queueServiceUri": self.endpoint("queue"),
                "AzureWebJobsStorage__tableServiceUri": self.endpoint("table"),
                "AzureWebJobsStorage__blobServiceUri": self.endpoint("blob")}

    def stop(self) -> None:
        # Azurite waits for idle keep-alive connections before it exits; the
        # data is either in memory or already written, so don't wait long.
        stop_process(self.proc, timeout=5.0 if self.persistent else 1.0, sig=signal.SIGINT)

    def restart(self) -> None:
        """Start it again after `stop()`: same ports, same data (on disk only).
        A storage outage as clients see it: refused connections, then the
        same account back."""
        if not self.persistent:
            raise RuntimeError("an in-memory Azurite loses its data when stopped: "
                               "give start_azurite a location to restart it")
        if self.proc.poll() is None:
            raise RuntimeError("Azurite is still running: stop() it first")
        self.proc = _spawn_azurite(self.queue_port, self.table_port, self.blob_port,
                                   self.location, self.log, self.oauth, self.debug_log)


def start_azurite(*, queue_port: int = 0, table_port: int = 0, blob_port: int = 0,
                  location: str | None = None, log: Path | None = None,
                  oauth: tuple[Path, Path] | None = None, debug_log: Path | None = None
                  ) -> Azurite:
    """Start Azurite; port 0 picks a free port. In memory unless `location` is
    given (a folder for its data, which `Azurite.restart` finds again).

    `oauth=(cert, key)`: https with that certificate, and Entra ID bearer tokens
    accepted (`--oauth basic`: Azurite checks a token's audience, issuer and
    lifetime, not its signature) besides the account key. `debug_log`: Azurite's
    debug log, one entry per request with its operation and how it was authorized."""
    queue_port = queue_port or free_port()
    table_port = table_port or free_port()
    blob_port = blob_port or free_port()
    proc = _spawn_azurite(queue_port, table_port, blob_port, location, log, oauth, debug_log)
    return Azurite(proc, queue_port, table_port, blob_port, location=location, log=log,
                   oauth=oauth, debug_log=debug_log)


def _spawn_azurite(queue_port: int, table_port: int, blob_port: int, location: str | None,
                   log: Path | None, oauth: tuple[Path, Path] | None = None,
                   debug_log: Path | None = None) -> subprocess.Popen[bytes]:
    args = [
        node_tool("azurite"), "--silent", "--skipApiVersionCheck", "--loose",
        # Without it Azurite tries to send telemetry out, and lingers at exit.
        "--disableTelemetry",
        "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
        "--blobPort", str(blob_port), "--queuePort", str(queue_port),
        "--tablePort", str(table_port),
    ]
    if oauth:
        args += ["--oauth", "basic", "--cert", str(oauth[0]), "--key", str(oauth[1])]
    if debug_log:
        args += ["--debug", str(debug_log)]
    if location:
        args += ["--location", location]
    else:
        args += ["--inMemoryPersistence"]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        for port in (queue_port, table_port):
            wait_for_port(port, proc=proc)
    except Exception:
        stop_process(proc)
        raise
    return proc


def no_browser_path(tmp: Path) -> str:
    """A PATH whose first entry holds a no-op `xdg-open`: the Playground CLI
    dies at start where it can't open a browser."""
    shim = tmp / "no-browser"
    shim.mkdir(parents=True, exist_ok=True)
    opener = shim / "xdg-open"
    opener.write_text("#!/bin/sh\nexit 0\n")
    opener.chmod(0o755)
    return f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"


def start_emulator(*extra: str, timeout: float = 30.0) -> tuple[subprocess.Popen[str], str]:
    """`python -m proactive emulator --port 0` (plus `extra` options) as a child in
    its own process group, and the serviceUrl it prints ("http://127.0.0.1:PORT/").
    Stop it with `stop_process`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "proactive", "emulator", "--host", "127.0.0.1", "--port", "0",
         *extra], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)
    url = ""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:  # a bounded wait for its first lines
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not url and time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:  # it exited
                break
            if "serviceUrl:" in line:  # "Connector emulator serviceUrl: http://..."
                url = line.split("serviceUrl:", 1)[1].strip()
    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        stop_process(proc)
        raise RuntimeError(f"the Connector emulator did not start on loopback ({url!r}, "
                           f"exit status {proc.poll()})")
    return proc, url if url.endswith("/") else url + "/"


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0,
                 sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
