#!/usr/bin/env bash
# ganntec-tune.sh: `ganntec tune` for hosts where the package is installed but the console
# script is not on PATH (a oneshot unit, a root shell). All logic is in ganntec/tuning.
# Usage: tuning/ganntec-tune.sh check|plan|apply|undo|emit|snapshot [options]
set -euo pipefail
python="${GANNTEC_PYTHON:-python3}"
exec "$python" -m ganntec.tuning "$@"
