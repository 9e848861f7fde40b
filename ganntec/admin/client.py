"""A small synchronous client of the admin HTTP API (urllib: no dependency beyond the stdlib).

    client = AdminClient("https://10.0.0.7:8081", cafile="cert.pem", token_file="tokens.json")
    client.login("admin", password)          # stores the token pair, keyed by URL
    client.call("GET", "/accounts")          # {"accounts": [...]}

Tokens live in a token file (mode 0600) shared by every `ganntec admin` invocation: one entry
per server URL. When the server answers 401 token_expired the access token is refreshed with
the refresh token and the request is sent once more; a refresh token is single-use, so the new
pair replaces the old in the file at once.

Failures are exceptions, each with its exit code of the command: ServerRefused (1: the server
answered with an error), ConnectFailed (3: no answer: refused, unreachable, TLS verification),
NotLoggedIn (2: no token for this URL) and TokenFileError (2: the token file is unusable)."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request

from ganntec.admin.auth import write_private

DEFAULT_URL = "http://127.0.0.1:8081"
API_PREFIX = "/admin/v1"
TOKEN_FILE_VERSION = 1
DEFAULT_TIMEOUT_S = 10.0


class AdminClientError(Exception):
    """Base of the client's failures."""


class ServerRefused(AdminClientError):
    """The server answered with an error: HTTP status and the body's code and msg."""

    def __init__(self, status: int, code: str, msg: str):
        super().__init__(f"{code}: {msg}")
        self.status = status
        self.code = code
        self.msg = msg


class ConnectFailed(AdminClientError):
    """No HTTP answer from the server (connection refused, timeout, TLS verification...)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot connect to {url} ({reason})")
        self.url = url
        self.reason = reason


class NotLoggedIn(AdminClientError):
    """No token for this URL in the token file."""


class TokenFileError(AdminClientError):
    """The token file cannot be read or written, as `--token-file=PATH (reason)`."""


def default_token_file(environ: dict | None = None) -> str:
    """$GANNTEC_ADMIN_TOKEN_FILE, else $XDG_STATE_HOME/ganntec/admin-token.json, else
    ~/.local/state/ganntec/admin-token.json."""
    env = os.environ if environ is None else environ
    if env.get("GANNTEC_ADMIN_TOKEN_FILE"):
        return env["GANNTEC_ADMIN_TOKEN_FILE"]
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the XDG spec: a relative path is invalid, ignore it
        state = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "ganntec", "admin-token.json")


def normalize_url(url: str) -> str:
    """The URL as the token file keys it (no trailing slash); ValueError says what is wrong."""
    parts = urllib.parse.urlsplit(url.strip()) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("http:// or https:// and a host")
    if parts.query or parts.fragment:
        raise ValueError("no query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("bad port") from None
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


class TokenStore:
    """The token file: {"version": 1, "servers": {url: {"user", "access_token", "refresh_token"}}}."""

    def __init__(self, path: str):
        self.path = path

    def _read(self) -> dict:
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
        except FileNotFoundError:
            return {"version": TOKEN_FILE_VERSION, "servers": {}}
        except (OSError, ValueError) as exc:
            raise TokenFileError(f"--token-file={self.path} (unreadable: {exc}; remove it and log in again)") from None
        if not isinstance(doc, dict) or doc.get("version") != TOKEN_FILE_VERSION or not isinstance(doc.get("servers"), dict):
            raise TokenFileError(f"--token-file={self.path} (not a token file; remove it and log in again)")
        return doc

    def get(self, url: str) -> dict | None:
        entry = self._read()["servers"].get(url)
        if (isinstance(entry, dict) and isinstance(entry.get("access_token"), str)
                and isinstance(entry.get("refresh_token"), str)):
            return entry
        return None

    def put(self, url: str, user: str, tokens: dict) -> None:
        doc = self._read()
        doc["servers"][url] = {"user": user, "access_token": tokens["access_token"],
                               "refresh_token": tokens["refresh_token"]}
        self._write(doc)

    def drop(self, url: str) -> bool:
        """Forget this URL's tokens; whether there were any."""
        doc = self._read()
        if doc["servers"].pop(url, None) is None:
            return False
        self._write(doc)
        return True

    def _write(self, doc: dict) -> None:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
            write_private(self.path, json.dumps(doc, indent=1).encode() + b"\n")
        except OSError as exc:
            raise TokenFileError(f"--token-file={self.path} (cannot write: {exc.strerror or exc})") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following one would send the bearer token to another place."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class AdminClient:
    """The admin API at `url`, with tokens kept in `token_file` (see default_token_file).
    `cafile`: trust this CA or self-signed certificate for https (else the system's CAs)."""

    def __init__(self, url: str = DEFAULT_URL, *, cafile: str | None = None, token_file: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S):
        self.url = normalize_url(url)
        self.store = TokenStore(token_file or default_token_file())
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({}), _NoRedirect()]
        # no proxies: the admin port is on this host or rack, and a proxy would see the tokens
        if self.url.startswith("https:"):
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
        elif cafile:
            raise ValueError("a CA file is only for https:// URLs")
        self._opener = urllib.request.build_opener(*handlers)

    # --- transport ----------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: dict | None, token: str | None) -> dict:
        headers = {"Accept": "application/json", "User-Agent": "ganntec-admin"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + API_PREFIX + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:  # before URLError: it is one
            raise self._refusal(exc.code, exc.read() if exc.fp else b"", exc.headers) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                reason = f"{reason.verify_message or reason}; --cacert PATH trusts a self-signed certificate"
            raise ConnectFailed(self.url, str(reason)) from None
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout mid-answer
            raise ConnectFailed(self.url, str(exc) or type(exc).__name__) from None
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise ServerRefused(status, "bad_response", f"HTTP {status} without a JSON object (is {self.url} "
                                                        "the admin port?)")
        return doc

    @staticmethod
    def _refusal(status: int, raw: bytes, headers) -> ServerRefused:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("code"), str):
            return ServerRefused(status, doc["code"], str(doc.get("msg", "")))
        if 300 <= status < 400:
            location = headers.get("Location", "?") if headers else "?"
            return ServerRefused(status, f"http_{status}", f"redirected to {location} (not followed)")
        text = raw[:200].decode("utf-8", "replace").strip()
        return ServerRefused(status, f"http_{status}", text or http.client.responses.get(status, "error"))

    def _tokens(self) -> dict:
        tokens = self.store.get(self.url)
        if tokens is None:
            raise NotLoggedIn(f"--url={self.url} (not logged in: ganntec admin login --user NAME)")
        return tokens

    def _refreshed(self, used: dict) -> dict:
        current = self.store.get(self.url)
        if current is not None and current["access_token"] != used["access_token"]:
            return current  # another invocation refreshed meanwhile (and spent the refresh token)
        try:
            tokens = self._checked_tokens(self._send("POST", "/refresh", {"refresh_token": used["refresh_token"]}, None))
        except ServerRefused as exc:
            if exc.status == 401:
                raise ServerRefused(401, exc.code, f"{exc.msg} (log in again: ganntec admin login)") from None
            raise
        self.store.put(self.url, used.get("user", ""), tokens)
        return tokens

    @staticmethod
    def _checked_tokens(doc: dict) -> dict:
        if not (isinstance(doc.get("access_token"), str) and isinstance(doc.get("refresh_token"), str)):
            raise ServerRefused(200, "bad_response", "no access_token and refresh_token in the answer")
        return doc

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        """An authenticated request to API_PREFIX + path; on 401 token_expired, refresh and
        send it once more (the server refused it before acting, so resending is safe)."""
        tokens = self._tokens()
        try:
            return self._send(method, path, body, tokens["access_token"])
        except ServerRefused as exc:
            if exc.status != 401 or exc.code != "token_expired":
                raise
        return self._send(method, path, body, self._refreshed(tokens)["access_token"])

    # --- session ------------------------------------------------------------------------------

    def login(self, user: str, password: str) -> dict:
        """Log in and store the token pair; returns the server's token answer."""
        tokens = self._checked_tokens(self._send("POST", "/login", {"username": user, "password": password}, None))
        self.store.put(self.url, user, tokens)
        return tokens

    def logout(self) -> bool:
        """Forget this URL's tokens (the API has no revocation: they expire on their own)."""
        return self.store.drop(self.url)

    # --- the API ------------------------------------------------------------------------------

    def accounts(self) -> dict:
        return self.call("GET", "/accounts")

    def account(self, account_id: str) -> dict:
        return self.call("GET", f"/accounts/{_seg(account_id)}")

    def create_account(self, account_id: str, permissions: list[str], limits: dict | None = None) -> dict:
        body: dict = {"account_id": account_id, "permissions": permissions}
        if limits:
            body["limits"] = limits
        return self.call("POST", "/accounts", body)

    def account_action(self, account_id: str, action: str) -> dict:
        """suspend, resume, kill or unkill."""
        return self.call("POST", f"/accounts/{_seg(account_id)}/{action}")

    def move(self, account_id: str, direction: str, asset: str, amount: str, reference: str | None = None) -> dict:
        """credit or debit `amount` (a decimal string) of `asset`."""
        body = {"asset": asset, "amount": amount}
        if reference is not None:
            body["reference"] = reference
        return self.call("POST", f"/accounts/{_seg(account_id)}/{direction}", body)

    def set_limits(self, account_id: str, limits: dict) -> dict:
        return self.call("PUT", f"/accounts/{_seg(account_id)}/limits", limits)

    def balances(self, account_id: str) -> dict:
        return self.call("GET", f"/accounts/{_seg(account_id)}/balances")

    def keys(self, account_id: str) -> dict:
        return self.call("GET", f"/accounts/{_seg(account_id)}/keys")

    def create_key(self, account_id: str, kind: str, permissions: list[str], ips: list[str],
                   label: str | None = None, public_key: str | None = None) -> dict:
        body: dict = {"kind": kind, "permissions": permissions, "ips": ips}
        if label is not None:
            body["label"] = label
        if public_key is not None:
            body["public_key"] = public_key
        return self.call("POST", f"/accounts/{_seg(account_id)}/keys", body)

    def rotate_key(self, key_id: str, public_key: str | None = None) -> dict:
        return self.call("POST", f"/keys/{_seg(key_id)}/rotate", {} if public_key is None else {"public_key": public_key})

    def revoke_key(self, key_id: str) -> dict:
        return self.call("DELETE", f"/keys/{_seg(key_id)}")

    def symbol_action(self, symbol: str, action: str) -> dict:
        """halt or resume trading in a symbol."""
        return self.call("POST", f"/symbols/{_seg(symbol)}/{action}")


def _seg(value: str) -> str:
    # one path segment: "/" or ".." in an id cannot reach another endpoint
    quoted = urllib.parse.quote(str(value), safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted
