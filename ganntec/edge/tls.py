"""TLS for the edge's port: TLS 1.3 only when enabled (`edge.tls_cert` and `edge.tls_key`, PEM
files), and a self-signed pair for tests and demos (`ganntec tls self-signed`).

Binance serves TLS 1.2 and 1.3; Ganntec's clients sit on the same host or the same rack, so
there is no old client to keep: 1.3 alone removes every negotiable weak suite and the older
handshakes. A client that offers only 1.2 fails the handshake."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl

SELF_SIGNED_DAYS = 365


def server_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    """A server context that accepts TLS 1.3 only, with this certificate chain and key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


def self_signed(out_dir: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = SELF_SIGNED_DAYS,
                now: dt.datetime | None = None) -> tuple[str, str]:
    """Write `cert.pem` and `key.pem` (mode 0600; an EC P-256 key) into out_dir, the
    certificate valid for `hosts` (IP addresses and DNS names) from now for `days`. Returns
    (cert path, key path). For tests and demos: clients must trust this exact certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if not hosts:
        raise ValueError("hosts=() (at least one IP address or DNS name)")
    names = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    start = now or dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start - dt.timedelta(minutes=5))
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    os.makedirs(out_dir, exist_ok=True)
    cert_path, key_path = os.path.join(out_dir, "cert.pem"), os.path.join(out_dir, "key.pem")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
