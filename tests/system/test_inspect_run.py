"""`ganntec inspect --json` of a running instance (its rings' rates, the workers' processes
alive with their CPU) and of the same instance killed: the segments are left, stale, their
parties dead; `ganntec clean` then removes them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import orjson
import psutil
import pytest
from test_runtime import Server

from ganntec.shm import records as R
from ganntec.shm.records import OrderType, RecordType, Side, TimeInForce
from ganntec.shm.segment import list_segments
from ganntec.shm.stats import WAITS


def inspect_json(instance: str, *args: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "ganntec.cli", "inspect", "--instance", instance, "--json", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return orjson.loads(out.stdout)


def kill_every_process(s: Server) -> None:
    """SIGKILL the supervisor and all its children at once: no cleanup runs."""
    tree = [s.proc.pid] + [c.pid for c in psutil.Process(s.proc.pid).children(recursive=True)]
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    s.proc.wait(60)
    for pid in tree:
        try:
            psutil.Process(pid).wait(60)
        except psutil.NoSuchProcess:
            pass


def test_inspect_a_running_instance_then_its_leftovers(tmp_path, instance):
    s = Server(tmp_path, instance)
    try:
        s.start()
        rows = inspect_json(instance, "--rates", "0.3")
        rings = {r["name"].split(".", 2)[-1]: r for r in rows if r["ring"]}
        assert {"cmd.0", "cmd.1", "reports.1"} <= set(rings)
        assert all(r["state"] == "live" for r in rows)
        worker = rings["cmd.1"]["ring"]["consumer"]  # the engine worker reads the command ring
        assert worker["alive"] and worker["pid"] > 0 and "cpu_percent" in worker
        assert "rates" in rings["cmd.1"]["ring"] and rings["cmd.1"]["ring"]["rates"]["interval_s"] > 0
        only = inspect_json(instance, "--name", "reports")
        assert only and all("reports" in r["name"] for r in only)
        # killed: every process of the instance at once, no cleanup
        kill_every_process(s)
        left = inspect_json(instance)
        assert left and all(r["state"] == "stale" for r in left)
        dead = {r["name"].split(".", 2)[-1]: r["ring"]["consumer"] for r in left if r["ring"]}
        assert dead["cmd.1"]["pid"] == worker["pid"] and not dead["cmd.1"]["alive"]
        subprocess.run([sys.executable, "-m", "ganntec.cli", "clean", "--instance", instance], check=True,
                       capture_output=True, timeout=120)
        assert list_segments(instance) == []
    finally:
        s.kill()


def _processes(rows: list[dict]) -> dict[str, dict]:
    """The stats tables (shm/stats.py) by process name."""
    return {r["name"].split(".stats.", 1)[1]: r["table"] for r in rows if r["table"].get("kind") == "stats"}


def test_inspect_shows_each_process_its_stage_counts_and_the_journal_then_post_mortem(tmp_path, instance):
    """Per-engine placement: after N client orders every engine's stats row counted them (order,
    risk and matching each pop the N commands once; position at least one record per command),
    the journal row stands at or after the last sequence reported, each process is alive with a fresh heartbeat
    stamp; killed, the same rows stay readable and their writers show dead."""
    from test_runtime import Client

    n = 40
    s = Server(tmp_path, instance, placement="per-engine")
    client = None
    try:
        s.start()
        client = Client(instance)
        client.send_new(n)
        client.wait_acked(n)
        seqs = np.concatenate([r["seq"] for r in client.reports])
        # an acknowledgement can come from risk (a BALANCE) before matching pops the command:
        # read until matching has counted them all, with a deadline
        deadline = time.monotonic() + 60
        while True:
            procs = _processes(inspect_json(instance, "--rates", "0.2"))
            if procs["matching"]["stages"]["matching"]["count"] >= n or time.monotonic() > deadline:
                break
        assert set(procs) == {"supervisor", "order", "risk", "matching", "position"}
        for name, t in procs.items():
            assert t["writer"]["alive"] and t["writer_pid"] > 0 and t["writer_heartbeat_ns"] > 0, name
        assert procs["order"]["stages"]["order"]["count"] == n
        assert procs["risk"]["stages"]["risk"]["count"] == n
        assert procs["matching"]["stages"]["matching"]["count"] == n
        assert procs["position"]["stages"]["position"]["count"] >= n
        journal = procs["order"]["stages"]["journal"]
        assert journal["gauge_a"] >= int(seqs.max()) and journal["count"] >= 1  # (results may still flow)
        assert procs["supervisor"]["stages"]["recovery"]["count"] == 1
        waits = {name: WAITS[t["stages"]["process"]["gauge_a"]] for name, t in procs.items()}
        assert waits["supervisor"] == "sleep"
        assert {waits[e] for e in ("order", "risk", "matching", "position")} <= {"busy-spin", "spin-yield", "spin-block"}
        assert all(t["stages"]["process"]["gauge_b"] == -1 for t in procs.values())  # runtime.cpus = "auto"
        text = subprocess.run([sys.executable, "-m", "ganntec.cli", "inspect", "--instance", instance],
                              capture_output=True, text=True, timeout=120).stdout
        assert re.search(rf"^order\s+{procs['order']['writer_pid']}\s+alive.*\s{waits['order']}\s+-\s+order\s+{n}\s",
                         text, re.M), text
        assert re.search(r"journal .* last_seq=\d+", text), text
        client.close()
        client = None
        kill_every_process(s)
        left = _processes(inspect_json(instance))
        assert left["matching"]["stages"]["matching"]["count"] == n
        assert all(not t["writer"]["alive"] for t in left.values())
        text = subprocess.run([sys.executable, "-m", "ganntec.cli", "inspect", "--instance", instance],
                              capture_output=True, text=True, timeout=120).stdout
        assert re.search(rf"^risk\s+{procs['risk']['writer_pid']}\s+dead", text, re.M), text
    finally:
        if client is not None:
            client.close()
        s.kill()


def _reports_until(client, record_type: RecordType, count: int, timeout: float = 60.0) -> np.ndarray:
    """Raw report records (bytes, whole payloads) from the client's ring until `count` of
    `record_type` have come; between pops it waits on the ring itself, with a deadline."""
    out, parts, seen = np.zeros((4096, R.RECORD_BYTES), np.uint8), [], 0
    deadline = time.monotonic() + timeout
    while seen < count:
        n = client.rep.pop(out)
        if n:
            parts.append(out[:n].copy())
            seen += int((out[:n].view(R.RECORD_DTYPE).reshape(-1)["type"] == record_type).sum())
            continue
        left = deadline - time.monotonic()
        assert left > 0, f"{seen} of {count} {record_type.name} reports within {timeout} s"
        client.wait.wait_for_data(client.rep, 1, min(left, 1.0))
    return np.concatenate(parts)


@pytest.mark.parametrize("placement", ["single", "per-engine"])
def test_inspect_shows_top_of_book_and_balances_from_the_engines_tables(tmp_path, instance, placement):
    """Resting orders that never cross: account 1 bids at 20 prices, account 2 asks at 20. Once
    the client has read every BOOK_UPDATE, the depth table comes to hold the best levels of
    both sides and each balance row the last BALANCE report of that account and asset."""
    from test_runtime import Client

    s = Server(tmp_path, instance, placement=placement)
    client = None
    try:
        s.start()
        client = Client(instance)
        orders = []
        for k in range(20):
            for account, side, price in ((1, Side.BUY, 900_000 - 10 * k), (2, Side.SELL, 1_100_000 + 10 * k)):
                r = R.empty(RecordType.NEW_ORDER)
                n = r.view(R.NEW_ORDER_DTYPE)
                n["source"], n["source_seq"], n["account_id"], n["symbol_id"] = 1, client.next_seq, account, 0
                n["side"], n["order_type"], n["time_in_force"] = side, OrderType.LIMIT, TimeInForce.GTC
                n["price_tick"], n["qty_lot"] = price, 1 + k
                client.sent[client.next_seq] = r
                client.next_seq += 1
                orders.append(r)
        batch = R.concat(orders)
        done = 0
        while done < len(batch):
            done += client.cmd.push(batch[done:])
        raw = _reports_until(client, RecordType.BOOK_UPDATE, len(orders))
        balances = raw[raw.view(R.RECORD_DTYPE).reshape(-1)["type"] == RecordType.BALANCE]
        last = {}
        for rec in balances.view(R.BALANCE_DTYPE).reshape(-1):
            last[(int(rec["account_id"]), int(rec["asset_id"]))] = (int(rec["free_minor"]), int(rec["locked_minor"]))
        assert last

        def tables():
            rows = inspect_json(instance, "--name", "depth") + inspect_json(instance, "--name", "balances")
            books = [b for r in rows if r["table"].get("kind") == "depth" for b in r["table"]["books"]]
            table = {(b["account_id"], b["asset_id"]): b for r in rows if r["table"].get("kind") == "balances"
                     for b in r["table"]["balances"]}
            return books, table

        # the worker copies its state into the tables between batches (at once when it runs out
        # of work): poll until they hold it, with a deadline
        deadline = time.monotonic() + 60
        while True:
            books, table = tables()
            caught_up = (len(books) == 1 and books[0]["update_id"] == len(orders)
                         and all((table.get(k, {}).get("free_minor"), table.get(k, {}).get("locked_minor")) == v
                                 for k, v in last.items()))
            if caught_up or time.monotonic() > deadline:
                break
        (book,) = books
        assert book["symbol_id"] == 0 and book["update_id"] == len(orders)
        assert book["bids"] == [[900_000 - 10 * k, 1 + k] for k in range(20)]
        assert book["asks"] == [[1_100_000 + 10 * k, 1 + k] for k in range(20)]
        assert all((table[k]["free_minor"], table[k]["locked_minor"]) == v for k, v in last.items())
        assert book["last_seq"] > 0 and all(table[k]["last_seq"] > 0 for k in last)  # stamped with the state's sequence
        assert table[(1, 1)]["locked_minor"] > 0 and table[(2, 0)]["locked_minor"] > 0  # the bids' USDT, asks' BTC
        text = subprocess.run([sys.executable, "-m", "ganntec.cli", "inspect", "--instance", instance, "--account", "2"],
                              capture_output=True, text=True, timeout=120).stdout
        assert re.search(rf"^\s+0\s+{len(orders)}\s+1\s+900000\s+1100000\s+1\s+20/20", text, re.M), text
        assert re.search(rf"^account 2\n.*\n\s+0\s+{table[(2, 0)]['free_minor']}\s+{table[(2, 0)]['locked_minor']}", text,
                         re.M), text
    finally:
        if client is not None:
            client.close()
        s.kill()
