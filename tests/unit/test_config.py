"""The TOML config: the demo config, defaults, and one `field=value (reason)` per problem, all
reported together."""

from __future__ import annotations

import pytest

from ganntec import config as C
from ganntec.engines.symbols import STATUS_TRADING
from ganntec.shm.records import StpMode

MINIMAL = """
[[assets]]
name = "BTC"
precision = 8
[[assets]]
name = "USDT"
precision = 6
[[symbols]]
name = "BTCUSDT"
base = "BTC"
quote = "USDT"
tick_size = "0.01"
step_size = "0.0001"
min_price = "0.01"
max_price = "100000"
min_qty = "0.0001"
max_qty = "100"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(C.ConfigError) as e:
        C.parse(text)
    return e.value.problems


def test_the_demo_config_is_valid_and_has_the_documented_shape():
    cfg = C.load()
    assert cfg.instance.data_dir == "./ganntec-data"
    assert [s.name for s in cfg.symbols] == ["BTCUSDT", "ETHUSDT", "ETHBTC"]
    assert [a.name for a in cfg.assets] == ["BTC", "ETH", "USDT"]
    rows = cfg.symbol_rows()
    assert list(rows["symbol_id"]) == [0, 1, 2] and (rows["status"] == STATUS_TRADING).all()
    assert cfg.accounts and all(a.balances["USDT"] == "1000000" for a in cfg.accounts)
    assert cfg.journal.durability == "fsync" and cfg.runtime.placement == "auto"


def test_defaults_fill_every_section_left_out():
    cfg = C.parse(MINIMAL)
    assert cfg.instance == C.InstanceConfig() and cfg.journal == C.JournalConfig()
    assert cfg.runtime == C.RuntimeConfig() and cfg.engine == C.EngineConfig() and cfg.edge == C.EdgeConfig()
    s = cfg.symbols[0]
    assert (s.symbol_id, s.base.name, s.quote.name, s.quote.precision) == (0, "BTC", "USDT", 6)
    assert s.maker_fee == "0.001" and s.default_stp == StpMode.EXPIRE_MAKER


@pytest.mark.parametrize("cpus, edges, placement", [
    (2, 1, "single"),        # this host: a semaphore wake-up per hop would cost more than it gives
    (4, 1, "single"),        # a core per engine, none for the edge
    (5, 1, "per-engine"),
    (5, 2, "single"),
    (8, 2, "per-engine"),
])
def test_auto_placement_wants_a_core_per_engine_and_edge_process(monkeypatch, cpus, edges, placement):
    monkeypatch.setattr(C.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    cfg = C.parse(MINIMAL + f"\n[edge]\nenabled = false\nprocesses = {edges}\n")
    assert cfg.placement() == placement
    assert C.parse(MINIMAL + '\n[runtime]\nplacement = "per-engine"\n').placement() == "per-engine"


def test_optional_symbol_fields_and_accounts():
    cfg = C.parse(MINIMAL + """
maker_fee = "0.0002"
max_num_orders = 50
default_stp = "expire_both"
[[accounts]]
id = 7
balances = { USDT = "12.345678", BTC = "0.5" }
[engine]
loss_asset = "USDT"
""")
    s = cfg.symbols[0]
    assert (s.maker_fee, s.max_num_orders, s.default_stp) == ("0.0002", 50, StpMode.EXPIRE_BOTH)
    assert cfg.accounts == (C.AccountConfig(7, {"USDT": "12.345678", "BTC": "0.5"}),)


@pytest.mark.parametrize("extra, expected", [
    ("[journal]\ndurability = \"disk\"", "journal.durability='disk' (one of fsync, os)"),
    ("[journal]\nsegment_bytes = 10", "journal.segment_bytes=10 (at least 1 MiB)"),
    ("[runtime]\nplacement = \"two\"", "runtime.placement='two' (one of auto, single, per-engine)"),
    ("[runtime]\nwait = \"sleep\"", "runtime.wait='sleep' (one of auto, busy-spin, spin-yield, spin-block)"),
    ("[runtime]\nlock_memory = true", "runtime.lock_memory=True (must be str)"),
    ("[runtime]\nlock_memory = \"yes\"", "runtime.lock_memory='yes' (one of auto, required, off)"),
    ("[runtime]\ncpus = \"1-0\"", "runtime.cpus='1-0'"),
    ("[runtime]\ncpus = \"4000\"", "runtime.cpus='4000' (CPUs [4000] are not available to this process)"),
    ("[runtime]\nring_capacity = 1000", "runtime.ring_capacity=1000 (a power of two >= 16)"),
    ("[runtime]\nmax_in_flight = 70000", "runtime.max_in_flight=70000 (1 .. ring_capacity 65536)"),
    ("[runtime]\nheartbeat_ms = \"1s\"", "runtime.heartbeat_ms='1s' (must be int)"),
    ("[engine]\nfee_account = 5000", "engine.fee_account=5000 (0 .. max_accounts - 1 = 1023)"),
    ("[engine]\nloss_asset = \"EUR\"", "engine.loss_asset='EUR' (not a configured asset)"),
    ("[edge]\nport = 70000", "edge.port=70000 (0 .. 65535)"),
    ("[edge]\nadmin_port = 8080", "edge.admin_port=8080 (must differ from edge.port)"),
    ("[edge]\nprot = 1", "edge.prot=1 (unknown field)"),
    ("[instance]\nname = \"a b\"", "instance.name='a b' (use 1-48 of A-Z a-z 0-9 _ -)"),
    ("[extra]\nx = 1", "extra={'x': 1} (unknown section)"),
    ("[[assets]]\nname = \"BTC\"\nprecision = 8", "assets[2].name='BTC' (listed twice)"),
    ("[[assets]]\nname = \"eur\"\nprecision = 2", "assets[2].name='eur' (upper-case letters and digits, at most 16)"),
    ("[[assets]]\nname = \"EUR\"\nprecision = 19", "assets[2].precision=19 (an integer 0 .. 18)"),
    ("[[accounts]]\nid = 1\nbalances = { USDT = 10.5 }", "accounts[0].balances.USDT=10.5 (a decimal string: floats are not exact)"),
    ("[[accounts]]\nid = 1\nbalances = { EUR = \"1\" }", "accounts[0].balances.EUR='1' (not a configured asset)"),
    ("[[accounts]]\nid = 1\nbalances = { USDT = \"0.0000001\" }", "accounts[0].balances.USDT=0.0000001 (finer than USDT's 6 decimals)"),
    ("[[accounts]]\nid = 1024", "accounts[0].id=1024 (an integer 0 .. engine.max_accounts - 1 = 1023)"),
    ("[[accounts]]\nid = 1\n[[accounts]]\nid = 1", "accounts[1].id=1 (listed twice)"),
    # each balance fits, their sum does not: the risk engine would refuse the last credits
    ("[[accounts]]\nid = 1\nbalances = { USDT = \"3000000000000\" }\n[[accounts]]\nid = 2\n"
     "balances = { USDT = \"3000000000000\" }", "accounts.balances.USDT=6000000000000.000000 (the total over all accounts"),
])
def test_each_problem_names_field_value_and_reason(extra, expected):
    found = problems(MINIMAL + "\n" + extra)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize("line, expected", [
    ('tick_size = 0.01', "symbols[0].tick_size=0.01 (a decimal string"),
    ('tick_size = "0"', "symbols[0]: symbol BTCUSDT: tick_size=0 step_size=0.0001 (must be > 0)"),
    ('base = "ETH"', "symbols[0].base='ETH' (not a configured asset)"),
    ('quote = "BTC"', "symbols[0].quote='BTC' (same asset as base)"),
    ('max_num_orders = "5"', "symbols[0].max_num_orders='5' (must be an integer)"),
    ('default_stp = "sometimes"', "symbols[0].default_stp='sometimes' (one of NONE"),
    ('colour = "red"', "symbols[0].colour='red' (unknown field)"),
    ('symbol_id = 3', "symbols[0].symbol_id=3 (unknown field)"),
])
def test_symbol_problems(line, expected):
    key = line.split(" = ")[0]
    body = "\n".join(x for x in MINIMAL.splitlines() if not x.startswith(key + " ="))
    found = problems(body + "\n" + line)
    assert any(p.startswith(expected) for p in found), found


def test_a_missing_required_symbol_field_and_no_symbols():
    body = "\n".join(x for x in MINIMAL.splitlines() if not x.startswith("max_qty"))
    assert problems(body) == ["symbols[0].max_qty=<missing> (required)"]
    assert problems("[[assets]]\nname = \"BTC\"\nprecision = 8") == ["symbols=[] (at least one [[symbols]] table)"]


def test_every_problem_is_reported_at_once():
    found = problems(MINIMAL + "[edge]\nport = -1\n[journal]\ndurability = \"x\"\n")
    assert len(found) == 2


def test_bad_toml_and_files(tmp_path):
    assert problems("[edge\n")[0].startswith("<config>: not valid TOML")
    with pytest.raises(C.ConfigError, match=r"config=.*nope.toml \(No such file or directory\)"):
        C.load(str(tmp_path / "nope.toml"))
    path = tmp_path / "g.toml"
    path.write_text(MINIMAL)
    cfg = C.load(str(path), data_dir=str(tmp_path / "data"))
    assert cfg.instance.data_dir == str(tmp_path / "data") and cfg.symbols[0].name == "BTCUSDT"
