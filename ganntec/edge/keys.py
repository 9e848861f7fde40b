"""API keys of the configured accounts, kept in `<data-dir>/demo-accounts.json` (mode 0600): a
list of {"account", "api_key", "api_secret"}. Made on the first start (64 letters and digits
each, as Binance's keys look), read back on later starts so clients keep their keys; an
account added to the config gets a key on its first start. The admin plane (issue 5/7)
replaces this with rotating, encrypted keys."""

from __future__ import annotations

import os
import secrets
import string

import orjson

from ganntec.edge.auth import ApiKey

FILE_NAME = "demo-accounts.json"
_ALPHABET = string.ascii_letters + string.digits


def _token() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(64))


def _write(path: str, rows: list[dict]) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def account_keys(data_dir: str, account_ids) -> tuple[str, list[ApiKey]]:
    """(the file's path, one key per account), making keys for accounts that have none."""
    path = os.path.join(os.path.abspath(data_dir), FILE_NAME)
    rows: list[dict] = []
    if os.path.exists(path):
        try:
            rows = orjson.loads(open(path, "rb").read())
            if not isinstance(rows, list) or not all(
                    isinstance(r, dict) and isinstance(r.get("account"), int) and r.get("api_key") and r.get("api_secret")
                    for r in rows):
                raise ValueError("not a list of {account, api_key, api_secret}")
        except ValueError as exc:
            raise ValueError(f"{path} ({exc})") from None
    have = {r["account"] for r in rows}
    added = [{"account": a, "api_key": _token(), "api_secret": _token()} for a in account_ids if a not in have]
    if added or not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rows = rows + added
        _write(path, rows)
    os.chmod(path, 0o600)
    return path, [ApiKey(r["api_key"], r["api_secret"], r["account"]) for r in rows]
