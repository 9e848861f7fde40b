"""The `ganntec` command: inspect reads segments read-only, clean removes only dead leftovers."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys

import orjson

from ganntec.cli import main
from ganntec.inspect.segments import format_table, snapshot
from ganntec.shm.ring import Ring, unlink_doorbells
from ganntec.shm.segment import list_segments


def test_inspect_json_shows_a_live_ring(instance, capsys):
    with Ring.create(instance, "order.risk", 16, 128) as ring:
        ring.push(__import__("numpy").zeros((3, 16), "int64"))
        assert main(["inspect", "--instance", instance, "--json"]) == 0
        rows = orjson.loads(capsys.readouterr().out)
        (row,) = rows
        assert row["name"] == f"/ganntec.{instance}.order.risk"
        assert row["state"] == "live" and row["kind"] == "GNTCRING"
        assert (row["ring"]["capacity"], row["ring"]["slot_bytes"], row["ring"]["fill"]) == (16, 128, 3)
        assert main(["inspect", "--instance", instance]) == 0
        out = capsys.readouterr().out
        assert "cap=16" in out and "cons_beat=-" in out  # no consumer has beaten yet


def test_inspect_shows_heartbeat_ages_and_the_doorbell(instance):
    with Ring.create(instance, "cmd.1", 16, 128, doorbell=1, role="consumer") as ring:
        ring.heartbeat(5_000_000_000)
        line = format_table(snapshot(instance), now_ns=5_250_000_000).splitlines()[1]
        assert "cons_beat=250ms" in line and "prod_beat=-" in line and "doorbell=1" in line
        assert "beat" not in format_table(snapshot(instance))  # no clock given, no ages
    unlink_doorbells(instance, [1])


def test_inspect_shows_a_table(instance, capsys):
    from ganntec.shm.table import BALANCE_ROW_DTYPE, Table

    with Table.create(instance, "balances", BALANCE_ROW_DTYPE, 10, writer=True) as table:
        table.write(3, __import__("numpy").zeros((), BALANCE_ROW_DTYPE))
        assert main(["inspect", "--instance", instance, "--json"]) == 0
        (row,) = orjson.loads(capsys.readouterr().out)
        assert row["kind"] == "GNTCTABL"
        assert (row["table"]["kind"], row["table"]["rows"], row["table"]["writes"]) == ("balances", 10, 1)
        assert row["table"]["writer_pid"] == os.getpid()


def _leave_ring(instance):
    Ring.create(instance, "left", 8, 64)
    os._exit(0)


def test_clean_removes_a_dead_instance_only(instance, capsys):
    with Ring.create(instance, "alive", 8, 64):
        assert main(["clean", "--instance", instance]) == 2
        assert "is alive" in capsys.readouterr().err
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_leave_ring, args=(instance,))
    p.start()
    p.join(60)
    assert list_segments(instance) == [f"/ganntec.{instance}.left"]
    assert main(["inspect", "--instance", instance, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)[0]["state"] == "stale"
    assert main(["clean", "--instance", instance]) == 0
    out = capsys.readouterr().out
    assert f"/ganntec.{instance}.left" in out and f"/ganntec.{instance}.left.data" in out
    assert list_segments(instance) == []


def test_bad_instance_name_is_a_clear_error(capsys):
    assert main(["clean", "--instance", "../etc"]) == 2
    assert "instance='../etc'" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "ganntec.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "inspect" in out.stdout


def test_inspect_rates_between_two_samples_and_the_parties(instance, capsys):
    """Rates are read between two samples `gap` apart (the sleep and clock are inputs here):
    records published and consumed per second, and each party's process."""
    import numpy as np

    from ganntec.inspect.segments import sample

    with Ring.create(instance, "cmd.1", 64, 128, role="producer") as ring:
        clock = iter([1_000_000_000, 3_000_000_000])  # two seconds between the reads

        def sleep(_gap):  # what happens between the two reads: 10 records published
            ring.push(np.zeros((10, 16), "int64"))

        (row,) = sample(instance, 2.0, sleep=sleep, clock_ns=lambda: next(clock))
        rates = row["ring"]["rates"]
        assert (rates["published_per_s"], rates["consumed_per_s"], rates["interval_s"]) == (5.0, 0.0, 2.0)
        assert row["ring"]["producer"]["pid"] == os.getpid() and row["ring"]["producer"]["alive"]
        assert "cpu_percent" in row["ring"]["producer"]
        assert row["ring"]["consumer"] == {"pid": 0, "alive": False}
        assert "in/s=5" in format_table([row])
        assert sample(instance, 0.0, name_filter="no-such") == []
        assert main(["inspect", "--instance", instance, "--rates", "0"]) == 2
        assert "--rates=0.0 (seconds, > 0 and <= 3600)" in capsys.readouterr().err
