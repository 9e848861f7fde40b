"""Admin authentication (ganntec/admin/auth.py): scrypt password hashes, the users file, the
first start's admin, JWTs checked against a fixed clock, single-use refresh tokens, the signing
key's derivation and the IP allow-list."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import jwt
import pytest

from ganntec.admin import auth as A

NOW = 1_700_000_000
KEY = A.derive_signing_key(b"m" * 32)
PASSWORD = "correct horse battery"


def test_hash_and_verify():
    stored = A.hash_password(PASSWORD)
    salt, n, r, p, digest = stored.split("$")
    assert (int(n), int(r), int(p)) == (2**14, 8, 1)
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert A.verify_password(stored, PASSWORD)
    assert not A.verify_password(stored, PASSWORD + "!")
    assert A.hash_password(PASSWORD) != stored  # a fresh salt each time
    assert A.hash_password(PASSWORD, salt=b"s" * 16) == A.hash_password(PASSWORD, salt=b"s" * 16)
    for bad in ("", "garbage", "a$b$c$d$e", stored.replace("$16384$", "$1000$"), stored.replace("$8$", "$99$")):
        assert not A.verify_password(bad, PASSWORD)


def test_users_file_is_private_and_holds_no_password(tmp_path):
    path = str(tmp_path / A.USERS_FILE)
    users = A.AdminUsers.load(path)
    assert users.names() == []
    users.add("alice", PASSWORD, now_ms=NOW * 1000)
    users.add("bob.ops-2", "another long password", now_ms=NOW * 1000 + 1)
    users.save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    raw = Path(path).read_text()
    assert PASSWORD not in raw and "another long password" not in raw
    doc = json.loads(raw)
    assert doc["version"] == 1
    assert [(u["name"], u["created_ms"]) for u in doc["users"]] == [("alice", NOW * 1000), ("bob.ops-2", NOW * 1000 + 1)]
    assert not [f for f in os.listdir(tmp_path) if f != A.USERS_FILE]  # no temporary left behind

    again = A.AdminUsers.load(path)
    assert again.check("alice", PASSWORD) and not again.check("alice", "wrong password!!")
    again.set_password("alice", "a new password here")
    again.remove("bob.ops-2")
    again.save()
    final = A.AdminUsers.load(path)
    assert final.names() == ["alice"] and final.check("alice", "a new password here")
    assert not final.check("alice", PASSWORD)
    assert final.info() == [{"name": "alice", "created_ms": NOW * 1000}]


def test_users_refusals(tmp_path):
    users = A.AdminUsers(str(tmp_path / A.USERS_FILE))
    users.add("alice", PASSWORD, now_ms=0)
    with pytest.raises(A.AdminUsersError, match=r"name='alice' \(already an admin user\)"):
        users.add("alice", PASSWORD, now_ms=0)
    for name in ("", "a b", "x" * 33, "é", "a/b", "alice2\n"):
        with pytest.raises(A.AdminUsersError, match=r"name=.* \(1 to 32 of"):
            users.add(name, PASSWORD, now_ms=0)
    with pytest.raises(A.AdminUsersError, match=r"^password \(at least 12 characters\)$"):
        users.add("bob", "short", now_ms=0)
    with pytest.raises(A.AdminUsersError, match="no such admin user"):
        users.set_password("bob", PASSWORD)
    with pytest.raises(A.AdminUsersError, match="the last admin user"):
        users.remove("alice")
    (tmp_path / "bad.json").write_text('{"version": 2, "users": []}')
    with pytest.raises(A.AdminUsersError, match="not an admin users file"):
        A.AdminUsers.load(str(tmp_path / "bad.json"))


def test_unknown_user_is_checked_against_a_dummy_hash(tmp_path, monkeypatch):
    users = A.AdminUsers(str(tmp_path / A.USERS_FILE))
    users.add("alice", PASSWORD, now_ms=0)
    verified = []
    real = A.verify_password
    monkeypatch.setattr(A, "verify_password", lambda stored, pw: verified.append(stored) or real(stored, pw))
    assert users.check("mallory", PASSWORD) is False
    assert users.check("mallory", "") is False
    assert verified and all(h == A._DUMMY_HASH for h in verified)  # the same scrypt work as for a real name
    assert A._DUMMY_HASH.split("$")[1:4] == [str(A.SCRYPT_N), str(A.SCRYPT_R), str(A.SCRYPT_P)]


def test_initial_admin_once(tmp_path):
    path = str(tmp_path / "data" / A.USERS_FILE)
    pw_path = A.initial_admin(path, now_ms=NOW * 1000)
    assert pw_path == str(tmp_path / "data" / A.INITIAL_PASSWORD_FILE)
    assert stat.S_IMODE(os.stat(pw_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    password = Path(pw_path).read_text().strip()
    assert len(password) == 24 and password.isalnum()
    assert password not in Path(path).read_text()
    assert A.AdminUsers.load(path).check("admin", password)
    assert A.initial_admin(path, now_ms=NOW * 1000) is None
    assert Path(pw_path).read_text().strip() == password  # not rewritten


def test_initial_admin_refuses_a_stale_password_file(tmp_path):
    (tmp_path / A.INITIAL_PASSWORD_FILE).write_text("old\n")
    with pytest.raises(FileExistsError, match="remove the stale password file"):
        A.initial_admin(str(tmp_path / A.USERS_FILE), now_ms=0)
    assert not (tmp_path / A.USERS_FILE).exists()


def test_tokens_issue_and_verify_at_a_fixed_clock():
    issuer = A.TokenIssuer(KEY)
    pair = issuer.issue("alice", NOW)
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900 == A.ACCESS_TTL_S
    assert pair["refresh_expires_in"] == 8 * 3600
    claims = jwt.decode(pair["access_token"], KEY, algorithms=["HS256"], options={"verify_exp": False})
    assert {k: claims[k] for k in ("sub", "iat", "exp", "iss", "typ")} == {
        "sub": "alice", "iat": NOW, "exp": NOW + 900, "iss": "ganntec", "typ": "access"}
    refresh = jwt.decode(pair["refresh_token"], KEY, algorithms=["HS256"], options={"verify_exp": False})
    assert refresh["typ"] == "refresh" and refresh["exp"] == NOW + 28800 and refresh["jti"] != claims["jti"]
    assert issuer.verify_access(pair["access_token"], NOW) == "alice"
    assert issuer.verify_access(pair["access_token"], NOW + 899) == "alice"
    for now in (NOW + 900, NOW + 10_000):  # expired at exactly now >= exp
        with pytest.raises(A.AdminAuthError) as exc:
            issuer.verify_access(pair["access_token"], now)
        assert exc.value.code == "token_expired"


def test_tampered_garbage_foreign_and_wrong_typ_tokens_are_invalid():
    issuer = A.TokenIssuer(KEY)
    pair = issuer.issue("alice", NOW)
    head, body, sig = pair["access_token"].split(".")
    forged_body = base64.urlsafe_b64encode(json.dumps(
        {"sub": "root", "iat": NOW, "exp": NOW + 900, "iss": "ganntec", "typ": "access", "jti": "x"}).encode()
    ).rstrip(b"=").decode()
    other = A.TokenIssuer(A.derive_signing_key(b"other master key"))
    none_alg = jwt.encode({"sub": "root"}, None, algorithm="none")
    for token in (f"{head}.{forged_body}.{sig}", f"{head}.{body}.{sig[:-2]}AA", "garbage", "", None,
                  other.issue("alice", NOW)["access_token"], none_alg,
                  A.TokenIssuer(KEY, issuer="someone-else").issue("alice", NOW)["access_token"],
                  pair["refresh_token"]):  # a refresh token is no access token
        with pytest.raises(A.AdminAuthError) as exc:
            issuer.verify_access(token, NOW)
        assert exc.value.code == "invalid_token", token
    with pytest.raises(A.AdminAuthError) as exc:  # nor the other way round
        issuer.refresh(pair["access_token"], NOW)
    assert exc.value.code == "invalid_token"


def test_refresh_rotates_and_a_refresh_token_works_once():
    issuer = A.TokenIssuer(KEY)
    pair = issuer.issue("alice", NOW)
    later = NOW + 1000  # the access token has expired, the refresh token has not
    new = issuer.refresh(pair["refresh_token"], later)
    assert issuer.verify_access(new["access_token"], later) == "alice"
    assert new["refresh_token"] != pair["refresh_token"]
    with pytest.raises(A.AdminAuthError, match="already used") as exc:
        issuer.refresh(pair["refresh_token"], later)
    assert exc.value.code == "invalid_token"
    assert issuer.refresh(new["refresh_token"], later + 1)["access_token"]
    with pytest.raises(A.AdminAuthError) as exc:
        issuer.refresh(issuer.issue("alice", NOW)["refresh_token"], NOW + 28800)
    assert exc.value.code == "token_expired"


def test_used_refresh_tokens_are_bounded():
    issuer = A.TokenIssuer(KEY, max_used=2)
    a, b, c = (issuer.issue("alice", NOW)["refresh_token"] for _ in range(3))
    issuer.refresh(a, NOW)
    issuer.refresh(b, NOW)
    with pytest.raises(A.AdminAuthError, match="log in again"):  # refused rather than forgetting a or b
        issuer.refresh(c, NOW)
    # once a and b have expired they are forgotten (they are refused as expired anyway)
    late = issuer.issue("alice", NOW + 28800)["refresh_token"]
    assert issuer.refresh(late, NOW + 28800)
    assert len(issuer._used) == 1


def test_signing_key_derivation_is_deterministic():
    assert A.derive_signing_key(b"m" * 32) == KEY and len(KEY) == 32
    assert A.derive_signing_key(b"n" * 32) != KEY
    assert KEY != b"m" * 32
    with pytest.raises(ValueError):
        A.derive_signing_key(b"short")
    with pytest.raises(ValueError):
        A.TokenIssuer(b"too short")
    # a token issued before a "restart" verifies after it: the key comes from the master key
    token = A.TokenIssuer(A.derive_signing_key(b"m" * 32)).issue("alice", NOW)["access_token"]
    assert A.TokenIssuer(A.derive_signing_key(b"m" * 32)).verify_access(token, NOW) == "alice"


def test_allow_list():
    allow = A.AllowList(["127.0.0.1/32", "::1/128", "10.1.0.0/16", "2001:db8::/32", "::ffff:192.168.7.0/120"])
    assert allow.allows("127.0.0.1") and not allow.allows("127.0.0.2")
    assert allow.allows("::1") and not allow.allows("::2")
    assert allow.allows("10.1.255.3") and not allow.allows("10.2.0.1")
    assert allow.allows("2001:db8:1::5") and not allow.allows("2001:db9::1")
    assert allow.allows("::ffff:127.0.0.1") and allow.allows("::ffff:10.1.0.9")  # mapped client = IPv4
    assert allow.allows("192.168.7.200") and not allow.allows("192.168.8.1")  # mapped entry = IPv4
    assert not allow.allows("not an ip") and not allow.allows(None) and not allow.allows("")
    empty = A.AllowList([])
    assert not empty.allows("127.0.0.1") and not empty.allows("::1")
    with pytest.raises(A.AllowListError) as exc:
        A.AllowList(["127.0.0.1", "10.0.0.300", "10.0.0.5/24", 7])
    assert exc.value.problems == [
        "admin.allow_ips[1]='10.0.0.300' (not an IP address or network)",
        "admin.allow_ips[2]='10.0.0.5/24' (host bits set; the network is 10.0.0.0/24)",
        "admin.allow_ips[3]=7 (not an IP address or network)",
    ]
