"""The quick start: a whole local federation on loopback (``scripts/quickstart.sh`` runs this).

Usage: ``python scripts/demo.py [--root DIR] [--people N] ...`` (``--help`` lists the options).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import typer

from scripts.localfed import demo_command


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(help="Run a whole local federation on loopback (the quick start).")(demo_command)
    app()


if __name__ == "__main__":
    main()
