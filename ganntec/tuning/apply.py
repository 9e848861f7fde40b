"""Changing a host and changing it back: `apply` and `undo`, and who may run them.

Before the first change, apply saves each original value to `<root>/var/lib/ganntec/
tune-undo.json` (written atomically). An original already saved is never overwritten, so a
second apply after a crash (or after a partial run) still restores the values from before the
first one. `undo` writes them back, newest first, and removes the file once all are restored.

A change the kernel refuses with EIO on an IRQ (a managed or per-CPU interrupt that
smp_affinity cannot move; `isolcpus=managed_irq` is the tool for those) is reported and
kept out of the undo file; it does not fail the run. Any other refusal does (exit 1).

Authorization: apply and undo need an explicit --root. When it resolves to `/` (the real
machine) they also need euid 0 and GANNTEC_TUNE_ALLOW_LIVE=1 in the environment.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Callable, Mapping

from ganntec.tuning.host import Host
from ganntec.tuning.settings import DRIFT, ApplyError, Result

UNDO_FILE = "var/lib/ganntec/tune-undo.json"
ALLOW_ENV = "GANNTEC_TUNE_ALLOW_LIVE"


class Refused(Exception):
    """The operation may not run here: `field=value (reason)`."""


class UndoFileError(Exception):
    """The undo file exists but cannot be used: `path (reason)`."""


def authorize(root: str | None, host: Host, environ: Mapping[str, str], what: str) -> None:
    """Raise Refused unless `what` (apply, undo) may write under `root`."""
    if root is None:
        raise Refused(f"--root=<missing> ({what} writes: name the root explicitly, --root / for this machine)")
    if host.live:
        if host.euid() != 0:
            raise Refused(f"--root={root} ({what} on the real machine needs root; euid is {host.euid()})")
        if environ.get(ALLOW_ENV) != "1":
            raise Refused(f"--root={root} ({what} on the real machine needs {ALLOW_ENV}=1 in the environment)")


def load_undo(host: Host) -> list[dict]:
    """The saved originals, oldest first; [] when there is no undo file."""
    path = host.path(UNDO_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise UndoFileError(f"{path} ({exc})") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "key" in e for e in entries):
        raise UndoFileError(f"{path} (no list of entries with keys)")
    return entries


def save_undo(host: Host, entries: list[dict]) -> None:
    """Write the undo file atomically (a crash leaves the old file or the new, never half)."""
    path = host.path(UNDO_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "entries": entries}, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def apply(results: list[Result], host: Host, say: Callable[[str], None] = print) -> int:
    """Change every drifted, changeable setting; 0 when all changed, 1 when one failed."""
    todo = [r for r in results if r.status == DRIFT and not r.setting.check_only]
    entries = load_undo(host)
    saved = {e["key"] for e in entries}
    fresh = [r for r in todo if r.setting.key not in saved]
    if fresh:
        entries += [{"key": r.setting.key, **r.setting.undo_entry(r.restore)} for r in fresh]
        save_undo(host, entries)  # before the first change
    failed: set[str] = set()
    code = 0
    for r in todo:
        s = r.setting
        try:
            s.apply(host)
        except ApplyError as exc:
            failed.add(s.key)
            code = 1
            say(f"FAILED   {s.key}: {exc}")
            continue
        except OSError as exc:
            failed.add(s.key)
            if s.kind == "irq" and exc.errno == errno.EIO:
                say(f"kept     {s.key}: the kernel refused the affinity (EIO: a managed or per-CPU IRQ; "
                    "isolcpus=managed_irq covers managed ones)")
            else:
                code = 1
                say(f"FAILED   {s.key}: {s.action()} ({exc.strerror or exc})")
            continue
        say(f"changed  {s.key}: {r.current} -> {s.want}  # {s.reason}")
    dropped = [e for e in entries if e["key"] in failed and e["key"] not in saved]
    if dropped:  # nothing changed there: nothing to restore
        save_undo(host, [e for e in entries if e not in dropped])
    if not todo:
        say("nothing to change")
    return code


def undo(host: Host, say: Callable[[str], None] = print) -> int:
    """Restore every saved original, newest first; 0 when all are back (the file is removed)."""
    entries = load_undo(host)
    if not entries:
        say(f"nothing to undo (no /{UNDO_FILE})")
        return 0
    left = []
    for e in reversed(entries):
        try:
            if "cmd" in e:
                rc, out, err = host.run(list(e["cmd"]))
                if rc != 0:
                    raise ApplyError(f"{' '.join(e['cmd'])}: rc {rc} {(err or out).strip()}")
                say(f"restored {e['key']}: ran {' '.join(e['cmd'])}")
            else:
                host.write(e["path"], e["write"])
                say(f"restored {e['key']}: /{e['path']} = {e['write'].strip()}")
        except (ApplyError, OSError) as exc:
            left.append(e)
            say(f"FAILED   {e['key']}: {exc}")
    if left:
        save_undo(host, list(reversed(left)))
        return 1
    os.unlink(host.path(UNDO_FILE))
    return 0
