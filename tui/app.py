"""`flame-tui` entry point.

The dashboard (live node, executor, session and task states) is being built; until then the
command says so instead of failing obscurely.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print("usage: flame-tui [--endpoint EP]\n\nA live dashboard of a Flame cluster (not available yet).")
        return 0
    print("flame-tui: the dashboard is not available in this version yet; use `flmctl list -n|-e|-s`.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
