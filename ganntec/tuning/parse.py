"""Pure parsers for the text the tuning tool reads: sysfs bracketed choices, /proc/cmdline,
/proc/interrupts and `ethtool -c/-g/-l` output. No I/O here, so each is property-tested alone
(tests/property/test_tune_parsers.py); cpulists and hex masks live in ganntec.cpulist.

Formats (kernel 6.x, ethtool 6.1):

- bracketed: `always [madvise] never` -> ("madvise", ("always", "madvise", "never")).
- /proc/cmdline: space-separated `key`, `key=value`, `key="value with spaces"`; everything after
  a lone `--` goes to init, not the kernel. A repeated key keeps every value in order.
- /proc/interrupts: a header of `CPUn` columns, then `label: count... description`; for
  numbered IRQs the description ends with the handler names after two spaces, comma-separated
  when shared (`IR-PCI-MSIX-0000:3b:00.0 1-edge      eth0-TxRx-0`).
- ethtool: `key: value` lines, `n/a` for a parameter the driver lacks, -g/-l in two blocks
  ("Pre-set maximums:", "Current hardware settings:"). A driver without the operation answers
  "netlink error: Operation not supported" (rc != 0): EthtoolUnsupported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ganntec.cpulist import parse_cpulist


class ParseError(ValueError):
    """Text that is not in the expected format: `what=text (reason)`."""


class EthtoolUnsupported(Exception):
    """The driver does not implement this ethtool operation."""


# --- sysfs ------------------------------------------------------------------------------------

def bracketed(text: str) -> tuple[str, tuple[str, ...]]:
    """`always [madvise] never` -> ("madvise", options). A file with one bare word (as after a
    fake-tree write, or a sysfs file that prints only its value) is that word, one option."""
    words = text.split()
    chosen = [w for w in words if w.startswith("[") and w.endswith("]") and len(w) > 2]
    if len(chosen) > 1:
        raise ParseError(f"bracketed={text.strip()!r} (more than one choice in brackets)")
    options = tuple(w[1:-1] if w in chosen else w for w in words)
    if chosen:
        return chosen[0][1:-1], options
    if len(words) == 1:
        return words[0], options
    raise ParseError(f"bracketed={text.strip()!r} (no choice in brackets)")


# --- /proc/cmdline --------------------------------------------------------------------------

def cmdline_tokens(text: str) -> list[tuple[str, str | None]]:
    """The kernel's parameters in order: (key, value) with value None for a bare flag. Double
    quotes group spaces and are dropped, as the kernel's next_arg() does; `--` ends the list."""
    out: list[tuple[str, str | None]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        quoted = False
        start = i
        while i < n and (quoted or not text[i].isspace()):
            if text[i] == '"':
                quoted = not quoted
            i += 1
        token = text[start:i].replace('"', "")
        if token == "--":
            break
        key, sep, value = token.partition("=")
        out.append((key, value if sep else None))
    return out


def cmdline_params(text: str) -> dict[str, list[str | None]]:
    """{key: [value, ...]} in order of appearance (a flag's value is None)."""
    params: dict[str, list[str | None]] = {}
    for key, value in cmdline_tokens(text):
        params.setdefault(key, []).append(value)
    return params


ISOLCPUS_FLAGS = ("nohz", "domain", "managed_irq")


def isolcpus(value: str) -> tuple[frozenset[str], set[int]]:
    """`managed_irq,domain,2-7` -> ({"managed_irq", "domain"}, {2..7}): leading flags, then a cpulist."""
    parts = value.split(",")
    flags = set()
    while parts and parts[0] in ISOLCPUS_FLAGS:
        flags.add(parts.pop(0))
    try:
        return frozenset(flags), parse_cpulist(",".join(parts))
    except ValueError as exc:
        raise ParseError(f"isolcpus={value!r} ({exc})") from None


# --- /proc/interrupts -------------------------------------------------------------------------

@dataclass(frozen=True)
class Irq:
    counts: tuple[int, ...]  # one per CPU column (fewer for ERR/MIS-style rows)
    desc: str  # the rest of the line: chip, hwirq, type, handler names
    names: tuple[str, ...]  # handler names (numbered IRQs); () if none shown


def interrupts(text: str) -> tuple[int, dict[int | str, Irq]]:
    """(number of CPU columns, {irq: Irq}); numbered IRQs keyed by int, others (NMI, LOC) by name."""
    lines = text.splitlines()
    if not lines or not lines[0].split() or not all(re.fullmatch(r"CPU\d+", w) for w in lines[0].split()):
        raise ParseError(f"interrupts={lines[0] if lines else ''!r} (no CPUn header)")
    ncpu = len(lines[0].split())
    out: dict[int | str, Irq] = {}
    for line in lines[1:]:
        label, sep, rest = line.partition(":")
        label = label.strip()
        if not sep or not label:
            if line.strip():
                raise ParseError(f"interrupts line={line!r} (no 'label:')")
            continue
        words = rest.split()
        counts = []
        while words and len(counts) < ncpu and words[0].isdigit():
            counts.append(int(words.pop(0)))
        # the description keeps its own spacing: the handler names follow two spaces
        desc = rest
        for c in counts:
            desc = desc.lstrip()[len(str(c)):]
        desc = desc.strip()
        names: tuple[str, ...] = ()
        if label.isdigit():
            pieces = re.split(r"\s{2,}", desc)
            if len(pieces) > 1:
                names = tuple(n.strip() for n in pieces[-1].split(", ") if n.strip())
            key: int | str = int(label)
        else:
            key = label
        out[key] = Irq(tuple(counts), desc, names)
    return ncpu, out


# --- ethtool ----------------------------------------------------------------------------------

def _check_ethtool(rc: int, out: str, err: str, what: str) -> None:
    if rc != 0:
        text = (err or out).strip()
        if "Operation not supported" in text or "not supported" in text.lower():
            raise EthtoolUnsupported(text)
        raise ParseError(f"{what} (rc {rc}: {text or 'no output'})")


def _value(text: str) -> str | None:
    text = text.strip()
    return None if text == "n/a" else text


def ethtool_coalesce(out: str, rc: int = 0, err: str = "") -> dict[str, str | None]:
    """`ethtool -c` -> {"adaptive-rx": "off", "rx-usecs": "0", ...}; None for `n/a`."""
    _check_ethtool(rc, out, err, "ethtool -c")
    values: dict[str, str | None] = {}
    for line in out.splitlines():
        if not line.strip() or line.startswith("Coalesce parameters for"):
            continue
        pair = re.fullmatch(r"\s*(Adaptive|CQE mode)\s+RX:\s*(\S+)\s+TX:\s*(\S+)\s*", line)
        if pair:
            stem = pair[1].lower().replace(" ", "-")
            values[f"{stem}-rx"], values[f"{stem}-tx"] = _value(pair[2]), _value(pair[3])
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip() or " " in key.strip():
            raise ParseError(f"ethtool -c line={line!r} (not 'key: value')")
        values[key.strip()] = _value(value)
    if not values:
        raise ParseError(f"ethtool -c={out[:60]!r} (no parameters)")
    return values


def _blocks(out: str, what: str, header: str) -> dict[str, dict[str, str | None]]:
    blocks: dict[str, dict[str, str | None]] = {}
    current: dict[str, str | None] | None = None
    for line in out.splitlines():
        if not line.strip() or line.startswith(header):
            continue
        if line.strip() == "Pre-set maximums:":
            current = blocks.setdefault("max", {})
            continue
        if line.strip() == "Current hardware settings:":
            current = blocks.setdefault("current", {})
            continue
        key, sep, value = line.partition(":")
        if not sep or current is None:
            raise ParseError(f"{what} line={line!r} (not 'key: value' inside a block)")
        current[key.strip().lower().replace(" ", "-")] = _value(value)
    if "current" not in blocks:
        raise ParseError(f"{what}={out[:60]!r} (no 'Current hardware settings:')")
    return blocks


def ethtool_rings(out: str, rc: int = 0, err: str = "") -> dict[str, dict[str, str | None]]:
    """`ethtool -g` -> {"max": {"rx": "4096", "rx-mini": None, ...}, "current": {...}}."""
    _check_ethtool(rc, out, err, "ethtool -g")
    return _blocks(out, "ethtool -g", "Ring parameters for")


def ethtool_channels(out: str, rc: int = 0, err: str = "") -> dict[str, dict[str, str | None]]:
    """`ethtool -l` -> {"max": {"rx": None, "tx": None, "other": "1", "combined": "63"}, "current": {...}}."""
    _check_ethtool(rc, out, err, "ethtool -l")
    return _blocks(out, "ethtool -l", "Channel parameters for")


def ethtool_set_line(text: str, block: str | None, key: str, value: str) -> str:
    """`text` (an ethtool -c/-g/-l output) with `key`'s value replaced in place, keeping the
    spacing; `block` "current" for -g/-l, None for -c. The recording runner uses it to keep a
    fake tree's captured outputs in step with the `ethtool -C/-G/-L` it logs."""
    lines = text.splitlines(keepends=True)
    inside = block is None
    for i, line in enumerate(lines):
        s = line.strip()
        if s in ("Pre-set maximums:", "Current hardware settings:"):
            inside = block is not None and s == "Current hardware settings:"
            continue
        if not inside:
            continue
        pair = re.fullmatch(r"(\s*(Adaptive|CQE mode)\s+RX:\s*)(\S+)(\s+TX:\s*)(\S+)(\s*)", line)
        if pair:
            stem = pair[2].lower().replace(" ", "-")
            if key == f"{stem}-rx":
                lines[i] = pair[1] + value + pair[4] + pair[5] + pair[6]
                return "".join(lines)
            if key == f"{stem}-tx":
                lines[i] = pair[1] + pair[3] + pair[4] + value + pair[6]
                return "".join(lines)
            continue
        m = re.fullmatch(r"([^:]+:\s*)(\S+)(\s*)", line)
        if m and m[1].split(":")[0].strip().lower().replace(" ", "-") == key:
            lines[i] = m[1] + value + m[3]
            return "".join(lines)
    raise ParseError(f"ethtool key={key!r} (not in the output)")
