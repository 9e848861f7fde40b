"""`python -m ganntec.tuning ...` = `ganntec tune ...` (the tuning/ganntec-tune.sh wrapper uses it)."""

import sys

from ganntec.tuning.cli import main

sys.exit(main())
