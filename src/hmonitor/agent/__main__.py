"""`python -m hmonitor.agent` = `hmonitor`."""

import sys

from hmonitor.agent.cli import main

sys.exit(main())
