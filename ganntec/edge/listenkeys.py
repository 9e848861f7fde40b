"""Listen keys: the deprecated but still used way to the user data stream, as Binance documented
it before retiring it (binance-spot-api-docs before 3c4a33d: rest-api.md "User data stream
endpoints", web-socket-api.md "Listen Key Management", user-data-stream.md).
POST/PUT/DELETE /api/v3/userDataStream and userDataStream.start/ping/stop (security type
USER_STREAM: the API key, no signature) start, extend and close an account's listen key;
`/ws/<listenKey>` and `/stream?streams=<listenKey>` (alone or beside market streams) carry that
account's user data events, made once by userdata.UserStreams.

Several edge processes serve one port and share nothing but a validity array, so a listen key is
computed, never stored: lowercase hex of HMAC-SHA256(secret, "listenKey") with the secret of the
account's first API key (by api_key), 64 characters like Binance's. One key per account, as
documented: "Doing a POST on an account with an active listenKey will return the currently
active listenKey and extend its validity for 60 minutes". Any process maps a listen key back to
its account from the KeyStore. The validity (ms, per account) is app[LISTEN_EXPIRY_MS]: now +
60 min on POST/PUT, 0 on DELETE.

When a key expires, its connections get `listenKeyExpired` and no user events after it; they
stay open ("No more events will be sent after this until a new listenKey is created"), as they
may carry market streams too. A key closed by DELETE ends its streams without the event ("This
event will not be pushed when the stream is closed normally"). Expiry is checked before each
event, after each applied batch and every EXPIRY_CHECK_S by a background task."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from aiohttp import web

from ganntec.edge import errors as E
from ganntec.edge.appkeys import (
    CLOCK_MS,
    KEYS,
    LISTEN_EXPIRY_MS,
    LISTEN_KEYS,
    STATE,
    STREAMS_KEY,
)
from ganntec.edge.auth import ApiKey, KeyStore, sign
from ganntec.edge.tasks import periodic
from ganntec.edge.userdata import USER_STREAMS

if TYPE_CHECKING:  # streams imports market, which imports trading, which imports this
    from ganntec.edge.streams import Connection

VALIDITY_MS = 60 * 60 * 1000  # "valid for 60 minutes after creation"; a keepalive extends it as much
EXPIRY_CHECK_S = 1.0          # how late, at most, an idle stream hears that its key expired


def listen_key_of(key: ApiKey) -> str:
    # A signed request's payload always carries `timestamp=...`, so a listen key (which travels
    # in URLs) is never the signature of any request.
    return sign(key.secret, "listenKey")


def account_listen_keys(keys: KeyStore) -> dict[int, str]:
    """account -> its listen key, from the secret of its first API key by (key_id, api_key): the
    same in every process that has the same keys, and unchanged by a newer key (a rotation)."""
    first: dict[int, ApiKey] = {}
    for k in keys:
        if k.account_id not in first or (k.key_id, k.api_key) < (first[k.account_id].key_id, first[k.account_id].api_key):
            first[k.account_id] = k
    return {account: listen_key_of(k) for account, k in first.items()}


class ListenKeys:
    """The accounts' listen keys, their validity, and the stream connections listening on them
    in this process (each listen key is a stream name of the StreamHub, so /ws gets the raw
    events and /stream wraps them as {"stream": <listenKey>, "data": ...})."""

    def __init__(self, app: web.Application):
        self.app = app
        self.valid_until_ms = app[LISTEN_EXPIRY_MS]
        self.hub = app[STREAMS_KEY]
        self.users = app[USER_STREAMS]
        self._keys_seen: tuple | None = None  # (the key set, its version) the maps were made from
        self._by_account: dict[int, str] = {}
        self._by_listen_key: dict[str, int] = {}
        self._listening: dict[str, tuple[int, object]] = {}  # listen key -> (account, its UserStreams sink)
        app[STATE].batch_listeners.append(self.expire_due)

    def _now(self) -> int:
        return self.app[CLOCK_MS]()

    def _maps(self) -> tuple[dict[int, str], dict[str, int]]:
        # A function of the key set: recomputed when it changes (keys.KeyRing's version moves
        # with every grant, revocation and suspension), so a listen key made from a revoked API
        # key's secret stops resolving.
        keys = self.app[KEYS]
        seen = (keys, keys.version)
        if self._keys_seen is None or seen[0] is not self._keys_seen[0] or seen[1] != self._keys_seen[1]:
            self._by_account = account_listen_keys(keys)
            self._by_listen_key = {lk: account for account, lk in self._by_account.items()}
            self._keys_seen = seen
        return self._by_account, self._by_listen_key

    def _alive(self, account: int, now_ms: int) -> bool:
        return int(self.valid_until_ms[account]) > now_ms

    def account_of(self, listen_key: str) -> int:
        """The account of a valid listen key, or -1125."""
        account = self._maps()[1].get(listen_key)
        if account is None or not self._alive(account, self._now()):
            raise E.unknown_listen_key()
        return account

    # --- USER_STREAM requests -------------------------------------------------------------
    def start(self, key: ApiKey) -> str:
        self.valid_until_ms[key.account_id] = self._now() + VALIDITY_MS
        return self._maps()[0][key.account_id]

    def _own(self, key: ApiKey, listen_key: str) -> int:
        # Another account's key does not exist for this one either.
        account = self.account_of(listen_key)
        if account != key.account_id:
            raise E.unknown_listen_key()
        return account

    def keepalive(self, key: ApiKey, listen_key: str) -> None:
        self.valid_until_ms[self._own(key, listen_key)] = self._now() + VALIDITY_MS

    def close(self, key: ApiKey, listen_key: str) -> None:
        self.valid_until_ms[self._own(key, listen_key)] = 0
        self.expire_due()  # this process's streams end now; the others' at their next check

    # --- streams --------------------------------------------------------------------------
    def attach(self, conn: Connection, listen_keys: list[str]) -> None:
        """Subscribe a connection to valid listen keys (account_of checked them)."""
        for lk in listen_keys:
            self.hub.subscribe(conn, [lk])
            if lk not in self._listening:
                account = self._maps()[1][lk]
                sink = partial(self._deliver, lk, account)
                self._listening[lk] = (account, sink)
                self.users.add(account, sink)

    def detach(self, conn: Connection) -> None:
        """A connection closes: its listen keys nobody else here listens to stop their events."""
        mine = [lk for lk in conn.streams if lk in self._listening]
        self.hub.unsubscribe(conn, mine)
        for lk in mine:
            if lk not in self.hub.subscribers:
                self._stop(lk)

    def _stop(self, listen_key: str) -> None:
        account, sink = self._listening.pop(listen_key)
        self.users.remove(account, sink)

    def _deliver(self, listen_key: str, account: int, event: dict) -> None:
        now_ms = self._now()
        if self._alive(account, now_ms):
            self.hub.publish(listen_key, event)
        else:  # expired since the last check: the event is not this stream's any more
            self._end(listen_key, account, now_ms)

    def _end(self, listen_key: str, account: int, now_ms: int) -> None:
        if self.valid_until_ms[account] != 0:  # expired, not closed by DELETE
            self.hub.publish(listen_key, {"e": "listenKeyExpired", "E": now_ms, "listenKey": listen_key})
        for conn in list(self.hub.subscribers.get(listen_key, ())):
            self.hub.unsubscribe(conn, [listen_key])
        self._stop(listen_key)

    def expire_due(self) -> None:
        """End the streams of every listen key whose validity is over (app[CLOCK_MS] is now)."""
        if not self._listening:
            return
        now_ms = self._now()
        for lk, (account, _) in list(self._listening.items()):
            if not self._alive(account, now_ms):
                self._end(lk, account, now_ms)


# --- the operations (REST in trading.py's route table, WebSocket API in wsapi.py) -------------
def _listen_key_param(params: dict) -> str:
    listen_key = params.get("listenKey")
    if not listen_key:
        raise E.mandatory_param("listenKey")
    return listen_key


async def start_user_stream(app: web.Application, key: ApiKey, params: dict) -> dict:
    return {"listenKey": app[LISTEN_KEYS].start(key)}


async def keepalive_user_stream(app: web.Application, key: ApiKey, params: dict) -> dict:
    app[LISTEN_KEYS].keepalive(key, _listen_key_param(params))
    return {}


async def close_user_stream(app: web.Application, key: ApiKey, params: dict) -> dict:
    app[LISTEN_KEYS].close(key, _listen_key_param(params))
    return {}


OPERATIONS = {
    "start_user_stream": ("USER_STREAM", start_user_stream),
    "keepalive_user_stream": ("USER_STREAM", keepalive_user_stream),
    "close_user_stream": ("USER_STREAM", close_user_stream),
}


def setup(app: web.Application) -> None:
    app[LISTEN_KEYS] = ListenKeys(app)
    # a stream with no trading on its account still hears that its key expired
    app.cleanup_ctx.append(periodic(EXPIRY_CHECK_S, lambda a: a[LISTEN_KEYS].expire_due()))
