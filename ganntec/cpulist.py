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
