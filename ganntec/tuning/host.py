"""The host the tuning tool looks at: one root prefix for every /proc, /sys, /etc and /dev path,
and one runner for every external command. Tests point it at a fake tree; nothing else in
ganntec.tuning opens a host path or starts a process.

- `read(rel)`: a missing file (or a missing directory on its path) raises Missing: the kernel
  lacks the feature, never drift. Permission, I/O errors and a directory where a file should be
  raise Unreadable.
- `write(rel, text)`: opens with truncation, as a sysfs write replaces the value.
- The runner is `runner(argv) -> (rc, stdout, stderr)`; a missing program is rc 127. On a root
  other than `/` the CLI uses RecordingRunner: it answers `ethtool -c/-g/-l NIC` from
  `<root>/.ganntec-tune/ethtool/NIC.{c,g,l}` (captured by `ganntec tune snapshot`), appends
  every would-be change (`ethtool -C/-G/-L`) to `<root>/.ganntec-tune/commands.log` and keeps
  the captured output in step, so a fake tree never reaches a real NIC.
- `statvfs(rel)`: on a fake root, `<root>/.ganntec-tune/statvfs/<rel>` ("frsize blocks bavail")
  stands in for the filesystem the snapshot was taken on.
"""

from __future__ import annotations

import errno
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ganntec.tuning import parse

Runner = Callable[[list[str]], tuple[int, str, str]]
STATE_DIR = ".ganntec-tune"  # inside a fake root: captured command output, the command log


class HostError(Exception):
    """A path that cannot be read; `rel` is relative to the root."""

    def __init__(self, rel: str, why: str):
        super().__init__(f"{rel} ({why})")
        self.rel = rel
        self.why = why


class Missing(HostError):
    """Not there: the feature is not on this kernel or host."""


class Unreadable(HostError):
    """There, but it cannot be read."""


def run_command(argv: list[str]) -> tuple[int, str, str]:
    """Run a real command (the live root's runner); a missing program is rc 127."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: timed out after 30 s"
    return done.returncode, done.stdout, done.stderr


@dataclass
class RecordingRunner:
    """The runner for a fake root: ethtool reads from captures, changes logged (see the module doc)."""

    root: Path

    def _capture(self, nic: str, op: str) -> Path:
        return self.root / STATE_DIR / "ethtool" / f"{nic}.{op}"

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        if len(argv) >= 3 and argv[0] == "ethtool" and argv[1] in ("-c", "-g", "-l"):
            path = self._capture(argv[2], argv[1][1])
            if not path.is_file():
                return 127, "", f"ethtool: no captured output {path.relative_to(self.root)}"
            text = path.read_text()
            if text.startswith("rc="):  # a captured failure: "rc=N\n<stderr>"
                first, _, rest = text.partition("\n")
                return int(first[3:]), "", rest
            return 0, text, ""
        if len(argv) >= 5 and argv[0] == "ethtool" and argv[1] in ("-C", "-G", "-L") and len(argv) % 2 == 1:
            log = self.root / STATE_DIR / "commands.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as f:
                f.write(shlex.join(argv) + "\n")
            path = self._capture(argv[2], argv[1][1].lower())
            if path.is_file():
                text = path.read_text()
                block = None if argv[1] == "-C" else "current"
                try:
                    for key, value in zip(argv[3::2], argv[4::2]):
                        text = parse.ethtool_set_line(text, block, key, value)
                except parse.ParseError as exc:
                    return 1, "", str(exc)
                path.write_text(text)
            return 0, "", ""
        return 127, "", f"{argv[0]}: not available on a fake root"


@dataclass
class Host:
    """Every host access of the tuning tool: files under `root`, commands through `runner`."""

    root: Path = Path("/")
    runner: Runner = run_command
    euid: Callable[[], int] = field(default=os.geteuid)

    @property
    def live(self) -> bool:
        """The real machine: the root resolves to `/`."""
        return self.root.resolve() == Path("/")

    def path(self, rel: str) -> Path:
        rel = rel.lstrip("/")
        if ".." in Path(rel).parts:
            raise ValueError(f"path={rel!r} (must stay under the root)")
        return self.root / rel

    def _open_read(self, path: Path) -> str:
        """The one place a host file is read (tests override it to make paths unreadable)."""
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def read(self, rel: str) -> str:
        try:
            return self._open_read(self.path(rel))
        except (FileNotFoundError, NotADirectoryError):
            raise Missing(rel, "no such file") from None
        except IsADirectoryError:
            raise Unreadable(rel, "a directory where a file belongs") from None
        except PermissionError:
            raise Unreadable(rel, "permission denied") from None
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # sysfs: listed, but the driver has no value (xps_cpus on virtio)
                raise Missing(rel, "no value from the driver") from None
            raise Unreadable(rel, exc.strerror or str(exc)) from None

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def listdir(self, rel: str) -> list[str]:
        """Sorted entries; Missing when the directory is absent."""
        try:
            return sorted(os.listdir(self.path(rel)))
        except (FileNotFoundError, NotADirectoryError):
            raise Missing(rel, "no such directory") from None
        except OSError as exc:
            raise Unreadable(rel, exc.strerror or str(exc)) from None

    def readlink(self, rel: str) -> str | None:
        try:
            return os.readlink(self.path(rel))
        except OSError:
            return None

    def write(self, rel: str, text: str) -> None:
        """Truncate and write, as sysfs and procfs replace a value on write."""
        with open(self.path(rel), "w", encoding="utf-8") as f:
            f.write(text)

    def statvfs(self, rel: str) -> tuple[int, int]:
        """(size, available) bytes of the filesystem at `rel`."""
        if not self.live:
            try:
                frsize, blocks, bavail = (int(w) for w in self.read(f"{STATE_DIR}/statvfs/{rel}").split())
                return frsize * blocks, frsize * bavail
            except Missing:
                pass
            except ValueError:
                raise Unreadable(f"{STATE_DIR}/statvfs/{rel}", "not 'frsize blocks bavail'") from None
        try:
            st = os.statvfs(self.path(rel))
        except FileNotFoundError:
            raise Missing(rel, "no such directory") from None
        except OSError as exc:
            raise Unreadable(rel, exc.strerror or str(exc)) from None
        return st.f_frsize * st.f_blocks, st.f_frsize * st.f_bavail

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        return self.runner(argv)


def host_for(root: str | os.PathLike, euid: Callable[[], int] = os.geteuid) -> Host:
    """The live host (real commands) for `/`, else a fake tree with the recording runner."""
    path = Path(root)
    if path.resolve() == Path("/"):
        return Host(path, run_command, euid)
    return Host(path, RecordingRunner(path), euid)
