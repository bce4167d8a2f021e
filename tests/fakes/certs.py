"""Credentials the push tests make for themselves: a CA and a server certificate for the
fakes' TLS, an APNs .p8 signing key, and an FCM service-account file."""

from __future__ import annotations

import datetime
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

APNS_KEY_ID = "KEYID12345"
APNS_TEAM_ID = "TEAM123456"
APNS_TOPIC = "com.creativeflow.app"
FCM_PROJECT_ID = "creativeflow-test"
FCM_CLIENT_EMAIL = f"push@{FCM_PROJECT_ID}.iam.gserviceaccount.com"


@dataclass(frozen=True)
class PushCredentials:
    ca_file: Path  # PUSH_CA_FILE
    cert_file: Path  # the fakes' server certificate (127.0.0.1, localhost)
    key_file: Path
    apns_key_file: Path  # APNS_CERT_FILE (.p8)
    apns_public_pem: bytes
    fcm_private_pem: bytes
    fcm_public_pem: bytes

    def service_account(self, directory: Path, token_uri: str, name: str = "sa.json") -> Path:
        """A service-account file whose token_uri points at a fake token endpoint."""
        path = directory / name
        info = {
            "type": "service_account",
            "project_id": FCM_PROJECT_ID,
            "private_key_id": "test-key-1",
            "private_key": self.fcm_private_pem.decode(),
            "client_email": FCM_CLIENT_EMAIL,
            "client_id": "1234567890",
            "token_uri": token_uri,
        }
        path.write_text(json.dumps(info))
        return path


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _certificate(
    subject: str,
    issuer: x509.Name | None,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_credentials(directory: Path) -> PushCredentials:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("streamer test CA", None, ca_key, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate("127.0.0.1", ca_cert.subject, server_key, ca_key, ca=False)
    apns_key = ec.generate_private_key(ec.SECP256R1())
    fcm_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.pem": ca_cert.public_bytes(serialization.Encoding.PEM),
        "server.pem": server_cert.public_bytes(serialization.Encoding.PEM),
        "server.key": _pem(server_key),
        f"AuthKey_{APNS_KEY_ID}.p8": _pem(apns_key),
        "apns_public.pem": _public_pem(apns_key),
        "fcm_public.pem": _public_pem(fcm_key),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return PushCredentials(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server.key",
        apns_key_file=directory / f"AuthKey_{APNS_KEY_ID}.p8",
        apns_public_pem=_public_pem(apns_key),
        fcm_private_pem=_pem(fcm_key),
        fcm_public_pem=_public_pem(fcm_key),
    )
