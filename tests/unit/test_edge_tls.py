"""TLS: the self-signed pair the CLI writes, a server context that takes TLS 1.3 only, and the
config's checks of the two paths."""

from __future__ import annotations

import os
import ssl
import stat

import pytest
from test_config import MINIMAL

from ganntec import config as C
from ganntec.cli import main
from ganntec.edge import tls as T


def test_self_signed_pair_loads_into_a_tls13_only_context(tmp_path):
    cert, key = T.self_signed(str(tmp_path / "tls"), ("127.0.0.1", "localhost", "edge.example"))
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    ctx = T.server_context(cert, key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    from cryptography import x509

    names = x509.load_pem_x509_certificate(open(cert, "rb").read()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert [str(n.value) for n in names] == ["127.0.0.1", "localhost", "edge.example"]


def test_the_cli_writes_the_pair_and_says_how_to_use_it(tmp_path, capsys):
    assert main(["tls", "self-signed", "--out", str(tmp_path), "--host", "10.0.0.7"]) == 0
    out = capsys.readouterr().out
    assert f'tls_cert = "{tmp_path}/cert.pem"' in out and f'tls_key = "{tmp_path}/key.pem"' in out
    assert main(["tls", "self-signed", "--out", str(tmp_path), "--days", "0"]) == 2
    assert "--days=0 (at least 1)" in capsys.readouterr().err


def test_config_wants_both_paths_readable_and_a_matching_pair(tmp_path):
    cert, key = T.self_signed(str(tmp_path / "a"))
    cert_b, _ = T.self_signed(str(tmp_path / "b"))
    ok = C.parse(MINIMAL + f'\n[edge]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    assert (ok.edge.tls_cert, ok.edge.tls_key) == (cert, key)
    for edge, want in ((f'tls_cert = "{cert}"', "(both, or neither)"),
                       (f'tls_cert = "{cert}"\ntls_key = "{tmp_path}/nope.pem"', "nope.pem (no readable file there)"),
                       (f'tls_cert = "{cert_b}"\ntls_key = "{key}"', f"edge.tls_cert={cert_b} (with edge.tls_key:")):
        with pytest.raises(C.ConfigError, match=want.replace("(", r"\(").replace(")", r"\)")):
            C.parse(MINIMAL + f"\n[edge]\n{edge}\n")
