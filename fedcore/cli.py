"""The ``fedcredit`` command. Role command groups are found through the ``fedcredit.cli`` entry points
(declared in pyproject.toml), so this module imports neither role.

Every failure prints one line, ``error: ...``, to stderr and exits non-zero (1 for fedcredit errors,
2 for usage errors).
"""

from __future__ import annotations

import os
import sys
import traceback
from importlib.metadata import entry_points

import click
import typer

from fedcore.errors import FedcreditError

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="fedcredit",
        help="Privacy-preserving federated credit risk: coordinator, party nodes and joint scoring.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    for ep in sorted(entry_points(group="fedcredit.cli"), key=lambda e: e.name):
        sub = ep.load()
        app.add_typer(sub, name=ep.name)
    return app


def main(argv: list[str] | None = None) -> None:
    app = build_app()
    try:
        # Without standalone mode click returns a command's exit code instead of raising it.
        rc = app(args=argv, prog_name="fedcredit", standalone_mode=False)
    except FedcreditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:
        print(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("FEDCREDIT_DEBUG"):
            traceback.print_exc()
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (set FEDCREDIT_DEBUG=1 for details)",
            file=sys.stderr,
        )
        sys.exit(1)
    if isinstance(rc, int) and rc != 0:
        if rc == 130:  # typer turns Ctrl-C into a returned 130, silently
            print("error: interrupted", file=sys.stderr)
        sys.exit(rc)


if __name__ == "__main__":
    main()
