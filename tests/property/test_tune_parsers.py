"""Property tests of the tuning tool's parsers (ganntec.cpulist masks, ganntec.tuning.parse):
cpulists, sets and hex masks round-trip (comma-grouped masks beyond 32 CPUs included); bracketed
sysfs choices; /proc/cmdline tokens; /proc/interrupts tables rendered and parsed back; ethtool
-c/-g/-l text, synthetic and in the real ethtool 6.1 formats (virtio, ixgbe-like)."""

from __future__ import annotations

import importlib.util
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ganntec.cpulist import format_cpulist, format_cpumask, parse_cpulist, parse_cpumask
from ganntec.tuning import parse

_spec = importlib.util.spec_from_file_location(
    "tune_hosts", Path(__file__).resolve().parents[1] / "fixtures" / "tune" / "hosts.py")
hosts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hosts)

cpusets = st.sets(st.integers(0, 300), max_size=40)


@given(cpusets)
def test_cpulist_set_mask_round_trip(cpus):
    assert parse_cpulist(format_cpulist(cpus)) == cpus
    mask = format_cpumask(cpus)
    assert parse_cpumask(mask) == cpus
    assert parse_cpulist(format_cpulist(parse_cpumask(mask))) == cpus


@given(cpusets, st.integers(0, 200))
def test_mask_groups_are_32_bits_most_significant_first(cpus, extra):
    nbits = (max(cpus) + 1 if cpus else 1) + extra
    mask = format_cpumask(cpus, nbits)
    groups = mask.split(",")
    assert len(groups) == -(-nbits // 32)
    assert all(len(g) == 8 for g in groups[1:])
    assert len(groups[0]) == -(-(nbits - 32 * (len(groups) - 1)) // 4)
    assert parse_cpumask(mask) == cpus
    assert format_cpumask(parse_cpumask(mask), nbits) == mask


def test_mask_examples():
    assert parse_cpumask("ff000000,00000001") == {0, *range(56, 64)}
    assert format_cpumask({0, *range(56, 64)}) == "ff000000,00000001"
    assert format_cpumask({0, 1}, 2) == "3"
    assert format_cpumask(set(), 16) == "0000"
    assert parse_cpumask("0000\n") == set()
    for bad in ("", "0x3", "zz", "1_0", "-1"):
        with pytest.raises(ValueError, match="cpumask="):
            parse_cpumask(bad)


words = st.text(string.ascii_lowercase + "+", min_size=1, max_size=8)


@given(st.lists(words, min_size=1, max_size=6, unique=True), st.data())
def test_bracketed_choice(options, data):
    chosen = data.draw(st.sampled_from(options))
    text = " ".join(f"[{o}]" if o == chosen else o for o in options) + "\n"
    assert parse.bracketed(text) == (chosen, tuple(options))


def test_bracketed_examples():
    assert parse.bracketed("always [madvise] never\n") == ("madvise", ("always", "madvise", "never"))
    assert parse.bracketed("never\n") == ("never", ("never",))
    for bad in ("always madvise never", "[a] [b]"):
        with pytest.raises(parse.ParseError):
            parse.bracketed(bad)


keys = st.text(string.ascii_lowercase + "_.", min_size=1, max_size=10)
plain = st.text(string.ascii_letters + string.digits + ",.-:/", min_size=1, max_size=12)
spaced = st.text(string.ascii_letters + " ,", min_size=1, max_size=12)


@given(st.lists(st.tuples(keys, st.one_of(st.none(), plain, spaced)), max_size=8))
def test_cmdline_tokens_round_trip(params):
    rendered = " ".join(k if v is None else f'{k}="{v}"' if " " in v else f"{k}={v}" for k, v in params)
    assert parse.cmdline_tokens(rendered + " -- init args=1\n") == params
    grouped = parse.cmdline_params(rendered)
    for k, v in params:
        assert v in grouped[k]
    assert sum(map(len, grouped.values())) == len(params)


def test_cmdline_examples():
    text = 'ro quiet isolcpus=managed_irq,domain,2-7 dyndbg="file x.c +p" nohz_full=2-7 nohz_full=3 -- --x=1\n'
    params = parse.cmdline_params(text)
    assert params["ro"] == [None]
    assert params["dyndbg"] == ["file x.c +p"]
    assert params["nohz_full"] == ["2-7", "3"]
    assert "--x" not in params
    assert parse.isolcpus(params["isolcpus"][0]) == (frozenset({"managed_irq", "domain"}), set(range(2, 8)))
    assert parse.isolcpus("1,3-4") == (frozenset(), {1, 3, 4})


names = st.text(string.ascii_letters + string.digits + "-_.:", min_size=1, max_size=14)


@given(st.integers(1, 20), st.lists(st.tuples(st.integers(0, 4000), st.lists(names, min_size=1, max_size=3)),
                                    max_size=12, unique_by=lambda r: r[0]))
def test_interrupts_round_trip(ncpu, rows):
    table = [(irq, "PCI-MSIX-0000:00:03.0", f"{k}-edge", ", ".join(ns)) for k, (irq, ns) in enumerate(rows)]
    cols, parsed = parse.interrupts(hosts.render_interrupts(table, ncpu))
    assert cols == ncpu
    for irq, ns in rows:
        assert parsed[irq].names == tuple(ns)
        assert parsed[irq].counts == tuple((irq * 7 + c) % 1000 for c in range(ncpu))
    assert parsed["NMI"].counts == (0,) * ncpu
    assert parsed["ERR"].counts == (0,)


def test_interrupts_of_this_vm():
    text = (Path(__file__).resolve().parents[1] / "fixtures/tune/this-vm/proc/interrupts").read_text()
    ncpu, table = parse.interrupts(text)
    assert ncpu == 2
    assert table[38].names == ("virtio2-input.0",)
    assert table[24].names == ("ACPI:Ged",)
    assert "LOC" in table
    with pytest.raises(parse.ParseError):
        parse.interrupts("garbage\n")


@given(st.dictionaries(st.text(string.ascii_lowercase + "-", min_size=1, max_size=16).filter(
    lambda k: not k.startswith("-")), st.one_of(st.none(), st.integers(0, 1 << 20).map(str)), min_size=1, max_size=10))
def test_ethtool_coalesce_round_trip(values):
    text = "Coalesce parameters for eth9:\n" + "".join(
        f"{k}:\t{'n/a' if v is None else v}\n" for k, v in values.items())
    assert parse.ethtool_coalesce(text) == values


@given(st.sampled_from(["g", "l"]), st.dictionaries(st.sampled_from(["RX", "TX", "RX Mini", "Other", "Combined"]),
                                                    st.one_of(st.none(), st.integers(0, 8192).map(str)), min_size=1))
def test_ethtool_blocks_round_trip(op, values):
    head = {"g": "Ring parameters for eth9:\n", "l": "Channel parameters for eth9:\n"}[op]
    body = "".join(f"{k}:\t\t{'n/a' if v is None else v}\n" for k, v in values.items())
    text = head + "Pre-set maximums:\n" + body + "Current hardware settings:\n" + body
    parsed = (parse.ethtool_rings if op == "g" else parse.ethtool_channels)(text)
    want = {k.lower().replace(" ", "-"): v for k, v in values.items()}
    assert parsed == {"max": want, "current": want}


def test_ethtool_real_formats():
    c = parse.ethtool_coalesce(hosts.IXGBE_C)
    assert (c["adaptive-rx"], c["adaptive-tx"], c["rx-usecs"], c["rx-frames"], c["tx-frames-irq"]) == ("on", None, "1", None, "256")
    assert c["cqe-mode-rx"] is None
    v = parse.ethtool_coalesce(hosts.VIRTIO_C)
    assert (v["adaptive-rx"], v["rx-usecs"], v["rx-frames"]) == ("off", "0", "1")
    g = parse.ethtool_rings(hosts.IXGBE_G)
    assert g["max"]["rx"] == "4096" and g["current"]["rx"] == "512" and g["current"]["tx-push"] == "off"
    assert g["current"]["rx-mini"] is None
    assert parse.ethtool_rings(hosts.VIRTIO_G)["current"] == {"rx": "256", "rx-mini": None, "rx-jumbo": None,
                                                               "tx": "256", "rx-buf-len": None, "cqe-size": None,
                                                               "tx-push": None}
    ch = parse.ethtool_channels(hosts.IXGBE_L)
    assert ch == {"max": {"rx": None, "tx": None, "other": "1", "combined": "63"},
                  "current": {"rx": None, "tx": None, "other": "1", "combined": "8"}}
    assert parse.ethtool_channels(hosts.VIRTIO_L)["current"]["combined"] == "1"
    for fn in (parse.ethtool_coalesce, parse.ethtool_rings, parse.ethtool_channels):
        with pytest.raises(parse.EthtoolUnsupported):
            fn("", 1, "netlink error: Operation not supported\n")
        with pytest.raises(parse.ParseError):
            fn("", 1, "netlink error: no device matches name (offset 24)\n")


def test_ethtool_set_line_keeps_layout():
    text = parse.ethtool_set_line(hosts.IXGBE_G, "current", "rx", "1024")
    assert text == hosts.IXGBE_G.replace("Current hardware settings:\nRX:\t\t\t512", "Current hardware settings:\nRX:\t\t\t1024")
    text = parse.ethtool_set_line(hosts.IXGBE_C, None, "adaptive-rx", "off")
    assert text == hosts.IXGBE_C.replace("Adaptive RX: on  TX: n/a", "Adaptive RX: off  TX: n/a")
    with pytest.raises(parse.ParseError):
        parse.ethtool_set_line(hosts.IXGBE_L, "current", "nope", "1")
