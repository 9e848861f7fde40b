"""The API-key vault: master key loading, sealed HMAC secrets (AES-256-GCM, AAD per entry),
cross-process appends, and Ed25519 signatures as Binance specifies them."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import stat
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ganntec.edge import vault as V

NOW = 1_700_000_000_000


def _key(n: int = 1) -> bytes:
    return bytes([n]) * 32


def _pair() -> tuple[str, str]:
    prv = Ed25519PrivateKey.generate()
    prv_pem = prv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    pub_pem = prv.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return prv_pem, pub_pem


def _write_key_file(path, data: bytes, mode: int) -> str:
    path.write_bytes(data)
    os.chmod(path, mode)
    return str(path)


# --- master key -----------------------------------------------------------------------------------

def test_master_key_from_env_base64_and_hex_wins_over_the_file(tmp_path):
    key = os.urandom(32)
    missing = str(tmp_path / "nope")
    assert V.load_master_key(missing, {"GANNTEC_MASTER_KEY": base64.b64encode(key).decode()}) == key
    assert V.load_master_key(None, {"GANNTEC_MASTER_KEY": key.hex()}) == key
    assert V.load_master_key(None, {"GANNTEC_MASTER_KEY": key.hex().upper() + "\n"}) == key


@pytest.mark.parametrize("bad", ["", "abc", base64.b64encode(b"x" * 31).decode(), "g" * 64, "00" * 33])
def test_a_bad_env_key_is_refused_without_echoing_it(bad):
    with pytest.raises(V.VaultError) as exc:
        V.load_master_key(None, {"GANNTEC_MASTER_KEY": bad})
    msg = str(exc.value)
    assert msg.startswith("GANNTEC_MASTER_KEY=<hidden> (") and (not bad or bad not in msg)


def test_master_key_from_a_0600_file(tmp_path):
    key = os.urandom(32)
    path = _write_key_file(tmp_path / "master.key", base64.b64encode(key) + b"\n", 0o600)
    assert V.load_master_key(path, {}) == key
    os.chmod(path, 0o400)  # stricter is fine
    assert V.load_master_key(path, {}) == key


def test_a_group_or_world_readable_key_file_is_refused(tmp_path):
    key = os.urandom(32)
    path = _write_key_file(tmp_path / "master.key", base64.b64encode(key) + b"\n", 0o644)
    with pytest.raises(V.VaultError) as exc:
        V.load_master_key(path, {})
    assert str(exc.value) == f"vault.master_key_file={path} (mode 0644: must be 0600)"
    os.chmod(path, 0o640)
    with pytest.raises(V.VaultError, match=r"mode 0640: must be 0600"):
        V.load_master_key(path, {})


def test_missing_unset_odd_and_garbled_key_files_are_refused_clearly(tmp_path):
    missing = str(tmp_path / "absent.key")
    with pytest.raises(V.VaultError) as exc:
        V.load_master_key(missing, {})
    assert str(exc.value) == f"vault.master_key_file={missing} (no such file)"
    with pytest.raises(V.VaultError, match=r"vault.master_key_file=<unset> \(no file given and GANNTEC_MASTER_KEY"):
        V.load_master_key(None, {})
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(V.VaultError, match=r"\(not a regular file\)"):
        V.load_master_key(str(d), {})
    secretish = base64.b64encode(b"k" * 31)
    path = _write_key_file(tmp_path / "short.key", secretish + b"\n", 0o600)
    with pytest.raises(V.VaultError) as exc:
        V.load_master_key(path, {})
    assert "(must hold base64 of 32 bytes and a newline)" in str(exc.value)
    assert secretish.decode() not in str(exc.value)


def test_a_key_file_of_another_user_is_refused(tmp_path, monkeypatch):
    path = _write_key_file(tmp_path / "master.key", base64.b64encode(os.urandom(32)) + b"\n", 0o600)
    monkeypatch.setattr(V.os, "geteuid", lambda: os.stat(path).st_uid + 1)
    with pytest.raises(V.VaultError, match=r"\(owned by uid \d+: must be owned by uid \d+"):
        V.load_master_key(path, {})


def test_create_master_key_makes_a_0600_file_and_never_overwrites(tmp_path):
    path = str(tmp_path / "conf" / "master.key")
    old = os.umask(0o022)  # a permissive umask must not loosen the file
    try:
        V.create_master_key(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    raw = Path(path).read_bytes()
    assert raw.endswith(b"\n") and len(base64.b64decode(raw.strip(), validate=True)) == 32
    key = V.load_master_key(path, {})
    with pytest.raises(V.VaultError) as exc:
        V.create_master_key(path)
    assert str(exc.value) == f"vault.master_key_file={path} (exists: refusing to overwrite a master key)"
    assert Path(path).read_bytes() == raw and V.load_master_key(path, {}) == key


# --- sealed HMAC secrets --------------------------------------------------------------------------

def test_add_and_open_round_trip_and_the_public_dict(tmp_path):
    vault = V.Vault(str(tmp_path), _key())
    assert vault.entries() == []  # no file yet
    pub, secret = vault.add_hmac(7, ["READ", "TRADE", "TRADE"], ["10.0.0.0/24", "192.0.2.7/32", "::FFFF:10.9.0.0/112"],
                                 "bot one", NOW)
    assert len(secret) == 64 and secret.isalnum() and secret.isascii()
    assert pub == {"key_id": 1, "account_id": 7, "api_key": pub["api_key"], "kind": "HMAC_SHA256",
                   "permissions": ["TRADE", "READ"], "ips": ["10.0.0.0/24", "192.0.2.7", "10.9.0.0/16"],
                   "label": "bot one", "created_ms": NOW}
    assert len(pub["api_key"]) == 64 and pub["api_key"].isalnum()
    [e] = vault.entries()
    assert e.public_dict() == pub and e.sealed
    assert vault.open_secret(e) == secret
    assert V.api_key_sha256(pub["api_key"]) == hashlib.sha256(pub["api_key"].encode()).digest() == e.api_key_sha256
    assert len(V.api_key_sha256(pub["api_key"])) == 32
    assert e.allows_ip("10.0.0.200") and e.allows_ip("192.0.2.7") and e.allows_ip("::ffff:192.0.2.7")
    # a mapped entry is the IPv4 network, as in the admin allow-list (one parser: auth.parse_network)
    assert e.allows_ip("10.9.3.4") and e.allows_ip("::ffff:10.9.3.4") and not e.allows_ip("10.8.0.1")
    assert not e.allows_ip("10.0.1.1") and not e.allows_ip("not-an-ip")
    assert stat.S_IMODE(os.stat(vault.path).st_mode) == 0o600
    doc = orjson.loads(Path(vault.path).read_bytes())
    assert doc["version"] == 1 and set(doc["entries"][0]) == {*pub, "sealed"}


def test_the_file_holds_no_form_of_the_secret(tmp_path):
    vault = V.Vault(str(tmp_path), _key())
    secrets_ = [vault.add_hmac(1, ["TRADE"], [], f"k{i}", NOW)[1] for i in range(5)]
    raw = Path(vault.path).read_bytes()
    for s in secrets_:
        b = s.encode()
        for form in (b, base64.b64encode(b), base64.urlsafe_b64encode(b), b.hex().encode(),
                     b.hex().upper().encode(), b[:16]):
            assert form not in raw
    # fresh random nonces: the same plaintext never seals the same
    assert len({e.sealed for e in vault.entries()}) == 5


def test_another_master_key_cannot_open(tmp_path):
    vault = V.Vault(str(tmp_path), _key(1))
    vault.add_hmac(1, ["TRADE"], [], "", NOW)
    other = V.Vault(str(tmp_path), _key(2))
    [e] = other.entries()  # the public fields read fine
    with pytest.raises(V.VaultError) as exc:
        other.open_secret(e)
    assert str(exc.value) == "vault entry key_id=1 (cannot be decrypted with this master key)"


def test_a_sealed_blob_moved_to_another_entry_does_not_open(tmp_path):
    vault = V.Vault(str(tmp_path), _key())
    _, s1 = vault.add_hmac(1, ["TRADE"], [], "a", NOW)
    _, s2 = vault.add_hmac(1, ["TRADE"], [], "b", NOW)
    # In the file: swap the two sealed blobs (same account, same master key; only the AAD differs).
    doc = orjson.loads(Path(vault.path).read_bytes())
    a, b = doc["entries"]
    a["sealed"], b["sealed"] = b["sealed"], a["sealed"]
    Path(vault.path).write_bytes(orjson.dumps(doc))
    for e in vault.entries():
        with pytest.raises(V.VaultError, match=rf"key_id={e.key_id} \(cannot be decrypted"):
            vault.open_secret(e)
    # In memory: an entry relabelled to another account, or given another api_key, does not open.
    doc["entries"][0]["sealed"], doc["entries"][1]["sealed"] = b["sealed"], a["sealed"]
    Path(vault.path).write_bytes(orjson.dumps(doc))
    e1, e2 = vault.entries()
    assert vault.open_secret(e1) == s1 and vault.open_secret(e2) == s2
    for moved in (dataclasses.replace(e1, account_id=2), dataclasses.replace(e1, api_key=e2.api_key),
                  dataclasses.replace(e1, key_id=2), dataclasses.replace(e2, sealed=e1.sealed)):
        with pytest.raises(V.VaultError, match=r"cannot be decrypted with this master key"):
            vault.open_secret(moved)


def test_concurrent_adds_from_two_processes(tmp_path):
    vault = V.Vault(str(tmp_path), _key())
    pids = []
    for p in range(2):
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                for i in range(20):
                    vault.add_hmac(p, ["TRADE"], [], f"p{p}-{i}", NOW + i)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    entries = vault.entries()  # parses and validates the whole file
    assert sorted(e.key_id for e in entries) == list(range(1, 41))
    assert len({e.api_key for e in entries}) == 40
    assert sorted(e.label for e in entries) == sorted(f"p{p}-{i}" for p in range(2) for i in range(20))
    assert all(len(vault.open_secret(e)) == 64 for e in entries)
    assert not os.path.exists(vault.path + ".tmp")


def test_reprs_hold_no_secret(tmp_path):
    key = _key(9)
    vault = V.Vault(str(tmp_path), key)
    pub, secret = vault.add_hmac(3, ["TRADE"], [], "x", NOW)
    [e] = vault.entries()
    text = repr(vault) + repr(e) + repr(vault.entries()) + str(e)
    for needle in (secret, e.sealed, e.sealed[:20], pub["api_key"], key.hex(), base64.b64encode(key).decode(),
                   repr(key)):
        assert needle not in text
    assert "key_id=1," in repr(e) and "account_id=3," in repr(e)


def test_missing_and_corrupt_vault_files(tmp_path):
    vault = V.Vault(str(tmp_path / "never-made"), _key())
    assert vault.entries() == []
    vault = V.Vault(str(tmp_path), _key())
    good, _ = vault.add_hmac(1, ["TRADE"], [], "", NOW)
    raw = Path(vault.path).read_bytes()
    bad_docs = {
        b"{not json": "not JSON",
        b'{"version": 2, "entries": []}': '"version": 1',
        b"[]": '"version": 1',
        orjson.dumps({"version": 1, "entries": [{**good, "key_id": 0, "sealed": "AAAA"}]}): "entry 0",
        orjson.dumps({"version": 1, "entries": [{**good}]}): "missing ['sealed']",
        orjson.dumps({"version": 1, "entries": [{**orjson.loads(raw)["entries"][0], "extra": 1}]}): "unknown ['extra']",
        orjson.dumps({"version": 1, "entries": orjson.loads(raw)["entries"] * 2}): "appears twice",
    }
    for content, why in bad_docs.items():
        Path(vault.path).write_bytes(content)
        with pytest.raises(V.VaultError) as exc:
            vault.entries()
        assert str(exc.value).startswith(f"vault={vault.path} (") and why in str(exc.value), (content, exc.value)


def test_inputs_are_validated(tmp_path):
    vault = V.Vault(str(tmp_path), _key())
    for kwargs, why in (({"permissions": []}, "at least one"), ({"permissions": ["WITHDRAW"]}, "WITHDRAW"),
                        ({"ips": ["10.0.0.7/24"]}, "host bits"), ({"ips": ["nope"]}, "nope"),
                        ({"ips": "10.0.0.1"}, "must be a list"), ({"label": "x" * 65}, "at most 64"),
                        ({"label": "a\nb"}, "printable"), ({"account_id": -1}, "account_id=-1")):
        args = {"account_id": 1, "permissions": ["TRADE"], "ips": [], "label": "", "now_ms": NOW, **kwargs}
        with pytest.raises(V.VaultError, match=why):
            vault.add_hmac(**args)
    assert vault.entries() == []
    with pytest.raises(V.VaultError, match=r"master_key=<hidden> \(must be 32 bytes\)"):
        V.Vault(str(tmp_path), b"short")


def test_copy_for_rotation(tmp_path):
    vault = V.Vault(str(tmp_path), _key())
    old, old_secret = vault.add_hmac(4, ["TRADE", "USER_STREAM"], ["10.1.0.0/16"], "desk", NOW)
    new, new_secret = vault.copy_for_rotation(old["key_id"], NOW + 5)
    assert new["key_id"] == 2 and new["api_key"] != old["api_key"] and new_secret != old_secret
    assert {k: new[k] for k in ("account_id", "kind", "permissions", "ips", "label")} == \
        {k: old[k] for k in ("account_id", "kind", "permissions", "ips", "label")}
    assert new["created_ms"] == NOW + 5
    assert vault.open_secret(vault.get(2)) == new_secret and vault.open_secret(vault.get(1)) == old_secret
    with pytest.raises(V.VaultError, match="takes no public_key_pem"):
        vault.copy_for_rotation(1, NOW, _pair()[1])
    with pytest.raises(V.VaultError, match=r"key_id=99 \(no such key"):
        vault.copy_for_rotation(99, NOW)

    _, pub1 = _pair()
    prv2, pub2 = _pair()
    ed = vault.add_ed25519(4, pub1, ["READ"], [], "ed", NOW)
    with pytest.raises(V.VaultError, match="rotation needs the new public_key_pem"):
        vault.copy_for_rotation(ed["key_id"], NOW)
    with pytest.raises(V.VaultError, match="same key"):
        vault.copy_for_rotation(ed["key_id"], NOW, pub1)
    ed2 = vault.copy_for_rotation(ed["key_id"], NOW + 9, pub2)
    assert isinstance(ed2, dict) and ed2["key_id"] == 4 and ed2["public_key"] == pub2
    assert V.verify_ed25519(vault.get(4).ed25519_public, "a=1", V.sign_ed25519(prv2, "a=1"))


# --- Ed25519 --------------------------------------------------------------------------------------

# binance-spot-api-docs fix-api.md, Logon <A> signature example: the only Ed25519 vector in the docs
# with its private key (rest-api.md "Ed25519 Keys" shows no key, and its sample outputs are 256-byte
# RSA signatures copied from the RSA section, so they cannot serve).
DOC_PRIVATE = ("-----BEGIN PRIVATE KEY-----\n"
               "MC4CAQAwBQYDK2VwBCIEIIJEYWtGBrhACmb9Dvy+qa8WEf0lQOl1s4CLIAB9m89u\n"
               "-----END PRIVATE KEY-----\n")
DOC_PAYLOAD = "\x01".join(  # noqa: FLY002 (as the docs build it)
    ["A", "EXAMPLE", "SPOT", "1", "20240627-11:17:25.223"])
DOC_SIGNATURE = "4MHXelVVcpkdwuLbl6n73HQUXUf1dse2PCgT1DYqW9w8AVZ1RACFGM+5UdlGPrQHrgtS3CvsRURC1oj73j8gCA=="
REST_PAYLOAD = ("symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=SELL&type=LIMIT"
                "&timeInForce=GTC&quantity=1&price=0.2&timestamp=1668481559918&recvWindow=5000")


def _doc_public_pem() -> str:
    prv = serialization.load_pem_private_key(DOC_PRIVATE.encode(), None)
    return prv.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_the_binance_docs_vector():
    assert V.sign_ed25519(DOC_PRIVATE, DOC_PAYLOAD) == DOC_SIGNATURE
    assert V.verify_ed25519(_doc_public_pem(), DOC_PAYLOAD, DOC_SIGNATURE)
    assert V.verify_ed25519(V.load_ed25519_public(_doc_public_pem()), DOC_PAYLOAD, DOC_SIGNATURE)


def test_sign_verify_round_trip_and_failures():
    prv, pub = _pair()
    key = V.load_ed25519_public(pub)
    sig = V.sign_ed25519(prv, REST_PAYLOAD)
    assert len(sig) == 88 and V.verify_ed25519(key, REST_PAYLOAD, sig)
    # a different payload: one character, or the payload decoded instead of as sent
    assert not V.verify_ed25519(key, REST_PAYLOAD.replace("quantity=1", "quantity=2"), sig)
    assert not V.verify_ed25519(key, REST_PAYLOAD.replace("%EF%BC%91", "\uff11"), sig)
    assert not V.verify_ed25519(key, REST_PAYLOAD + "&signature=" + sig, sig)
    # Ed25519 base64 is case-sensitive, unlike HMAC hex
    i = next(i for i, c in enumerate(sig) if c.isalpha())
    assert not V.verify_ed25519(key, REST_PAYLOAD, sig[:i] + sig[i].swapcase() + sig[i + 1:])
    assert not V.verify_ed25519(key, REST_PAYLOAD, sig.swapcase())
    # every single-character tamper fails, including the last data character (non-canonical base64)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for j in range(86):
        c = alphabet[(alphabet.index(sig[j]) + 1) % 64]
        assert not V.verify_ed25519(key, REST_PAYLOAD, sig[:j] + c + sig[j + 1:]), j
    # a valid signature by another key
    other_prv, _ = _pair()
    assert not V.verify_ed25519(key, REST_PAYLOAD, V.sign_ed25519(other_prv, REST_PAYLOAD))


@pytest.mark.parametrize("garbage", [
    "", "not base64!", "A" * 88, "=" * 88, "AAAA", None, 12345, "%2F" * 30,
    base64.b64encode(b"\x00" * 64).decode().rstrip("="), base64.urlsafe_b64encode(os.urandom(64)).decode(),
    base64.b64encode(os.urandom(63)).decode(), base64.b64encode(os.urandom(65)).decode(), "é" * 88,
])
def test_garbage_signatures_are_false_not_errors(garbage):
    _, pub = _pair()
    assert V.verify_ed25519(pub, "a=1", garbage) is False


def test_an_unencodable_payload_is_false():
    prv, pub = _pair()
    assert V.verify_ed25519(pub, "a=\udcff", V.sign_ed25519(prv, "a=1")) is False


def test_public_key_pem_checks(tmp_path):
    prv, pub = _pair()
    with pytest.raises(V.VaultError, match=r"is a PRIVATE key"):
        V.load_ed25519_public(prv)
    ec_pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(V.VaultError, match=r"an EC secp256r1 key: must be Ed25519"):
        V.load_ed25519_public(ec_pub)
    raw = base64.b64encode(serialization.load_pem_public_key(pub.encode()).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    for bad, why in ((raw, "exactly one PEM block"), (pub + pub, "exactly one PEM block"),
                     (pub.replace("A", "B", 3), "not a PEM public key"), ("", "must be PEM text")):
        with pytest.raises(V.VaultError, match=why):
            V.load_ed25519_public(bad)

    vault = V.Vault(str(tmp_path), _key())
    for bad in (prv, ec_pub, raw):
        with pytest.raises(V.VaultError):
            vault.add_ed25519(1, bad, ["TRADE"], [], "", NOW)
    with pytest.raises(V.VaultError, match="must be Ed25519"):
        V.sign_ed25519(ec.generate_private_key(ec.SECP256R1()), "a=1")
    assert vault.entries() == []


def test_ed25519_entries_in_the_vault(tmp_path):
    prv, pub = _pair()
    vault = V.Vault(str(tmp_path), _key())
    d = vault.add_ed25519(2, pub.replace("\n", "\r\n"), ["TRADE", "READ"], [], "ed key", NOW)
    assert d["kind"] == "ED25519" and d["public_key"] == pub and "sealed" not in d
    [e] = vault.entries()
    assert e.sealed is None and e.public_dict() == d
    assert e.ed25519_public is e.ed25519_public  # parsed once per entry
    assert V.verify_ed25519(e.ed25519_public, REST_PAYLOAD, V.sign_ed25519(prv, REST_PAYLOAD))
    with pytest.raises(V.VaultError, match=r"key_id=1 \(ED25519: has no secret\)"):
        vault.open_secret(e)
    hm, _ = vault.add_hmac(2, ["READ"], [], "", NOW)
    with pytest.raises(V.VaultError, match="has no public key"):
        _ = vault.get(hm["key_id"]).ed25519_public
