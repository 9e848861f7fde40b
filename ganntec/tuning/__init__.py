"""Host, kernel and NIC tuning for a co-located Ganntec host (`ganntec tune`): a declarative plan
of Settings derived from the engine's CPU plan, checked, applied and undone through one Host
root, so that every part runs against a fake /proc and /sys tree in the tests.

  parse.py     pure parsers (bracketed sysfs choices, /proc/cmdline, /proc/interrupts, ethtool)
  host.py      the Host: root prefix, reads and truncating writes, the command runner
  cpus.py      the CPU partition: hot, nic, housekeeping
  settings.py  the Setting units and their statuses
  plan.py      which Settings a config asks of a host
  apply.py     apply and undo, the undo file, who may write
  emit.py      the persistent files (sysctl.d, tmpfiles.d, irqbalance, TuneD, systemd, cmdline)
  snapshot.py  a fixture tree copied read-only from a host
  cli.py       `ganntec tune check|plan|apply|undo|emit|snapshot`
"""
