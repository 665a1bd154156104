"""The bot's certificate credential for MSAL, read from a PEM file.

cryptography is imported only here, and only for a bot that uses a
certificate instead of a client secret.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from proactive.errors import ConfigError


def _normalise_thumbprint(value: str) -> str:
    tp = re.sub(r"[\s:]", "", value).upper()
    if not re.fullmatch(r"[0-9A-F]{40}", tp):
        raise ConfigError(
            "MicrosoftAppCertificateThumbprint must be the certificate's SHA-1 "
            "thumbprint (40 hex digits)"
        )
    return tp


def load_certificate(path: str, thumbprint_setting: str) -> dict[str, str]:
    """MSAL's certificate credential from a PEM file (private key [+ certificate])."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"MicrosoftAppCertificatePath {path!r} can't be read ({type(exc).__name__})"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"the private key in {path!r} is encrypted; provide an unencrypted PEM"
        ) from None
    except Exception:
        raise ConfigError(f"{path!r} holds no usable PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"the private key in {path!r} must be an RSA key")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    public = key.public_key().public_numbers()
    matching = [c for c in certificates if _same_public_key(c, public)]
    computed = (
        matching[0].fingerprint(hashes.SHA1()).hex().upper()
        if matching
        else None
    )
    if thumbprint_setting:
        thumbprint = _normalise_thumbprint(thumbprint_setting)
        if computed is not None and computed != thumbprint:
            raise ConfigError(
                f"MicrosoftAppCertificateThumbprint does not match the certificate in {path!r}"
            )
    elif computed is not None:
        thumbprint = computed
    else:
        raise ConfigError(
            f"{path!r} has no certificate matching its private key: add the certificate "
            "to the PEM file or set MicrosoftAppCertificateThumbprint"
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return {"private_key": key_pem, "thumbprint": thumbprint}


def _same_public_key(cert: Any, public_numbers: Any) -> bool:
    try:
        return bool(cert.public_key().public_numbers() == public_numbers)
    except Exception:
        return False
