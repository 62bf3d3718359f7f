"""The ``ergo-py`` command: certificates, running and inspecting nodes, the demo.

``ergo-py cert self-signed|ca-init|issue|show`` manage certificate files;
``ergo-py node run CONFIG.toml`` runs a node that reloads its certificate
files when they change; ``ergo-py inspect NODE`` shows a running node's
connections and certificates; ``ergo-py observer NODE`` serves its live
page; ``ergo-py demo`` shows live rotation. Errors
print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ergo_py.gen.errors import ErgoError


def _parser() -> argparse.ArgumentParser:
    from ergo_py.cli import cert, demo, inspect, node, observer

    parser = argparse.ArgumentParser(prog="ergo-py", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cert.add_parser(sub)
    node.add_parser(sub)
    inspect.add_parser(sub)
    observer.add_parser(sub)
    demo.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except (ErgoError, OSError) as exc:
        print(f"ergo-py: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
