"""Entry script of the single-executable agent (PyInstaller bundles this file as `__main__`).

Built by `python3 tools/build_exe.py`; see packaging/hmonitor.spec.
"""

from __future__ import annotations

import sys

from hmonitor.agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
