"""Linux cpulists (`0-3,8,10-11`), as used by /sys, /proc/irq, taskset and systemd CPUAffinity=."""

from __future__ import annotations


def parse_cpulist(text: str) -> set[int]:
    """`"0-2,5"` -> {0, 1, 2, 5}. Raises ValueError naming the bad part."""
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        return cpus
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"cpulist={text!r} (bad part {part!r})") from None
        if a < 0 or b < a:
            raise ValueError(f"cpulist={text!r} (bad range {part!r})")
        cpus.update(range(a, b + 1))
    return cpus


def format_cpulist(cpus) -> str:
    """{0, 1, 2, 5} -> `"0-2,5"` (the kernel's canonical form)."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(set(cpus)):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def parse_cpumask(text: str) -> set[int]:
    """A hex CPU mask as /proc/irq/N/smp_affinity, rps_cpus and irqbalance print it -> set.

    The kernel groups 32 CPUs per comma, most significant group first: `ff000000,00000001` is
    CPUs {0, 56..63}. Raises ValueError naming the bad mask."""
    digits = text.strip().replace(",", "")
    if not digits:
        raise ValueError(f"cpumask={text!r} (empty)")
    try:
        value = int(digits, 16)
    except ValueError:
        raise ValueError(f"cpumask={text!r} (not hexadecimal)") from None
    if digits[:2].lower() == "0x" or digits[0] in "+-_" or "_" in digits:  # int() accepts these; the kernel does not
        raise ValueError(f"cpumask={text!r} (not hexadecimal)")
    return {bit for bit in range(value.bit_length()) if value >> bit & 1}


def format_cpumask(cpus, nbits: int | None = None) -> str:
    """set -> the kernel's mask text for `nbits` CPUs (default: up to the highest CPU): 32 bits
    per comma-separated group, lower groups 8 digits, the top group as wide as its bits need
    (`format_cpumask({0, 1}, 2)` = `3`, `format_cpumask({0}, 64)` = `00000000,00000001`)."""
    cpus = set(cpus)
    if any(c < 0 for c in cpus):
        raise ValueError(f"cpus={sorted(cpus)} (negative CPU)")
    need = max(cpus) + 1 if cpus else 1
    nbits = need if nbits is None else nbits
    if nbits < need:
        raise ValueError(f"nbits={nbits} (CPU {max(cpus)} does not fit)")
    value = sum(1 << c for c in cpus)
    groups = -(-nbits // 32)
    top_bits = nbits - 32 * (groups - 1)
    parts = [f"{value >> (32 * (groups - 1)):0{-(-top_bits // 4)}x}"]
    parts += [f"{value >> (32 * g) & 0xFFFFFFFF:08x}" for g in range(groups - 2, -1, -1)]
    return ",".join(parts)
