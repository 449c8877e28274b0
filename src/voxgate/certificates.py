"""TLS for `voxgate serve`: the operator's certificate, or a self-signed one for local development.

Some clients only speak `wss://` (the npm `openai` SDK always does). For a laptop, `--tls-self-signed`
makes a certificate for localhost, 127.0.0.1 and ::1 (and the listening host when it names one) once,
keeps it in `data_dir`, and reuses it until it nears expiry or the names change; the client trusts that
one file (`NODE_EXTRA_CA_CERTS=...`, Python's `ssl.create_default_context(cafile=...)`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from voxgate.config import Settings
from voxgate.hosts import ip_literal

CERT_FILE = "localhost-cert.pem"
KEY_FILE = "localhost-key.pem"
VALID_DAYS = 365
RENEW_WITHIN_DAYS = 30
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


class TlsSettingsError(ValueError):
    """TLS settings that cannot be served; the message says which."""


def tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """(certificate, key) to serve TLS with, making the self-signed pair if asked; None for plain HTTP."""
    if settings.tls_self_signed:
        if settings.tls_cert or settings.tls_key:
            raise TlsSettingsError("Give either tls_cert and tls_key, or tls_self_signed, not both.")
        return self_signed(settings.data_dir, settings.host)
    return _pair(settings.tls_cert, settings.tls_key, "tls")


def sip_tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """(certificate, key) for SIP over TLS: its own pair when set, else the gateway's; None: no SIP TLS."""
    if not settings.sip_tls_port:
        return None
    return _pair(settings.sip_tls_cert, settings.sip_tls_key, "sip_tls") or tls_files(settings)


def _pair(cert: Path | None, key: Path | None, setting: str) -> tuple[Path, Path] | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise TlsSettingsError(f"{setting}_cert and {setting}_key go together: give the certificate and its "
                               "private key (PEM).")
    for path in (cert, key):
        if not path.is_file():
            raise TlsSettingsError(f"{path} is not a readable file.")
    return cert, key


def server_context(files: tuple[Path, Path] | None) -> ssl.SSLContext | None:
    """The TLS context the listener serves with, from `tls_files`; None for plain HTTP."""
    if files is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(*files)
    except (ssl.SSLError, OSError) as exc:
        raise TlsSettingsError(f"{files[0]} and {files[1]} are not a certificate and its key in PEM: {exc}") from exc
    return context


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """The self-signed localhost pair in `directory`, made (or remade) when missing, stale or not covering `host`."""
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    names = _names(host)
    if cert_path.is_file() and key_path.is_file() and _still_good(cert_path, names):
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voxgate development (localhost)")])
    alt_names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(n)) if ip_literal(n) else x509.DNSName(n) for n in sorted(names)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the key is for this user only
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _names(host: str) -> set[str]:
    names = {"localhost", "127.0.0.1", "::1"}
    if host not in _WILDCARD_HOSTS:
        names.add(host.strip("[]").lower())
    return names


def _still_good(cert_path: Path, names: set[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    covered = {str(ip) for ip in alt.get_values_for_type(x509.IPAddress)} | set(alt.get_values_for_type(x509.DNSName))
    fresh = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=RENEW_WITHIN_DAYS)
    return fresh and names <= covered
