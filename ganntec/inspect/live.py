"""`ganntec inspect --watch` on a terminal: the same rows as the text table (segments.py), drawn
with rich as tables that redraw in place, dead processes and stale segments in red, full rings
in yellow. Only formatting lives here; what is read, and how, stays in segments.py."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ganntec.inspect.segments import _beat_age, _dur, _party, _process_name, process_rows


def _state(text: str) -> Text:
    style = "red" if text in ("stale", "dead", "no writer") or text.startswith("(dead") else "green"
    return Text(text, style=style)


def segments_table(rows: list[dict], now_ns: int | None) -> Table:
    t = Table(title="rings and segments", title_justify="left", expand=False)
    for col, just in (("segment", "left"), ("state", "left"), ("kind", "left"), ("fill", "right"),
                      ("in/s", "right"), ("out/s", "right"), ("full/s", "right"), ("producer", "left"),
                      ("consumer", "left"), ("beat", "right")):
        t.add_column(col, justify=just)
    for r in rows:
        ring = r["ring"]
        name = r["name"].split(".", 2)[-1]
        if not ring:
            t.add_row(name, _state(r["state"]), f"{r['kind']} v{r['layout_version']}", "", "", "", "", "", "", "")
            continue
        fill = ring["fill"] / ring["capacity"] if ring["capacity"] else 0.0
        rates = ring.get("rates") or {}
        t.add_row(name, _state(r["state"]), f"{r['kind']} v{r['layout_version']}",
                  Text(f"{ring['fill']}/{ring['capacity']}", style="yellow" if fill > 0.5 else ""),
                  f"{rates['published_per_s']:.0f}" if rates else "-",
                  f"{rates['consumed_per_s']:.0f}" if rates else "-",
                  f"{rates['full_claims_per_s']:.0f}" if rates else "-",
                  Text(f"{ring['producer_pid']}{_party(ring.get('producer'))}",
                       style="red" if "(dead)" in _party(ring.get("producer")) else ""),
                  Text(f"{ring['consumer_pid']}{_party(ring.get('consumer'))}",
                       style="red" if "(dead)" in _party(ring.get("consumer")) else ""),
                  _beat_age(ring["consumer_heartbeat_ns"], now_ns))
    return t


def processes_table(rows: list[dict], now_ns: int | None) -> Table:
    t = Table(title="processes (latency: edge receive to stage)", title_justify="left")
    for col, just in (("process", "left"), ("pid", "right"), ("state", "left"), ("beat", "right"),
                      ("wait", "left"), ("cpu", "right"), ("stage", "left"), ("count", "right"),
                      ("p50", "right"), ("p99", "right"), ("max", "right"), ("other", "left")):
        t.add_column(col, justify=just)
    for p in process_rows(rows):
        for i, (stage, st, other) in enumerate(p["stages"] or [("", None, "")]):
            head = ([p["name"], str(p["pid"]), _state(p["state"]), _beat_age(p["beat_ns"], now_ns), p["wait"],
                     p["cpu"]] if i == 0 else [""] * 6)
            tail = ([stage, str(st["count"]), _dur(st["p50_ns"]), _dur(st["p99_ns"]), _dur(st["max_ns"]), other]
                    if st is not None else [""] * 6)
            t.add_row(*head, *tail)
    return t


def books_table(rows: list[dict]) -> Table | None:
    books = [b for r in rows if r["table"].get("kind") == "depth" for b in r["table"].get("books", ())]
    if not books:
        return None
    t = Table(title="top of book (price_tick, qty_lot)", title_justify="left")
    for col in ("symbol", "update_id", "bid qty", "bid", "ask", "ask qty", "levels", "last"):
        t.add_column(col, justify="right")
    for b in books:
        bid = b["bids"][0] if b["bids"] else ["", ""]
        ask = b["asks"][0] if b["asks"] else ["", ""]
        t.add_row(str(b["symbol_id"]), str(b["update_id"]), Text(str(bid[1]), style="green"),
                  Text(str(bid[0]), style="green"), Text(str(ask[0]), style="red"), Text(str(ask[1]), style="red"),
                  f"{len(b['bids'])}/{len(b['asks'])}", str(b["last_price_tick"]))
    return t


def balances_table(rows: list[dict], account: int | None) -> Table | None:
    if account is None:
        return None
    t = Table(title=f"account {account} (minor units)", title_justify="left")
    for col in ("asset_id", "free", "locked", "last_seq"):
        t.add_column(col, justify="right")
    for r in rows:
        if r["table"].get("kind") == "balances":
            for b in r["table"].get("balances", ()):
                if b["account_id"] == account:
                    t.add_row(str(b["asset_id"]), str(b["free_minor"]), str(b["locked_minor"]), str(b["last_seq"]))
    return t


def render(rows: list[dict], now_ns: int | None = None, account: int | None = None):
    """Everything `ganntec inspect` shows, as one rich renderable."""
    if not rows:
        return Text("no ganntec segments")
    parts = [segments_table(rows, now_ns)]
    if process_rows(rows):
        parts.append(processes_table(rows, now_ns))
    parts += [p for p in (books_table(rows), balances_table(rows, account)) if p is not None]
    return Group(*parts)


__all__ = ["render", "segments_table", "processes_table", "books_table", "balances_table", "_process_name"]
