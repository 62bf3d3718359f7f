"""The ``ergo-py`` command, on click.

Why click: help with defaults for every option, ``--version``, shell
completion and typed parameters, from a library everyone maintains and
knows (typer builds on it too, and needs type hints read at run time).

Errors print one line and exit with 2 for bad arguments, configs or files
(the message names the file, the check that failed and the fix), 1 when a
node cannot be reached or does not answer.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from ergo_py._version import __version__
from ergo_py.gen.errors import ErgoError

__all__ = ["cli", "main"]

_SHELLS = ("bash", "zsh", "fish")


class _Group(click.Group):
    """Subcommands listed in the order they were added (the order of the walkthrough)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", prog_name="ergo-py")
def cli() -> None:
    """Ergo-style actor nodes on mutual TLS with live certificate rotation.

    \b
    ergo-py cert ...         make a CA, issue and show certificates
    ergo-py node run CONFIG  run a node (it reloads its certificate files)
    ergo-py node check CONFIG  check a config and the files it names
    ergo-py send / call      message a process on a running node
    ergo-py inspect NODE     a running node's connections and certificates
    ergo-py observer NODE    serve its live observer page
    ergo-py demo             3 nodes rotating certificates live

    Run "ergo-py COMMAND --help" for a command's options.
    """


@cli.command("completion")
@click.argument("shell", type=click.Choice(_SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash: eval "$(ergo-py completion bash)"   (e.g. in ~/.bashrc)
    zsh:  eval "$(ergo-py completion zsh)"    (e.g. in ~/.zshrc)
    fish: ergo-py completion fish > ~/.config/fish/completions/ergo-py.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # every shell offered is built into click
        raise click.UsageError(f"no completion for {shell}")
    ctx = click.get_current_context()
    comp = cls(cli, {}, "ergo-py", "_ERGO_PY_COMPLETE")
    click.echo(comp.source(), nl=False)
    ctx.exit(0)


def _add_commands() -> None:
    from ergo_py.cli import cert, demo, inspect, node, observer, send

    for command in (
        cert.group,
        node.group,
        send.send_command,
        send.call_command,
        inspect.command,
        observer.command,
        demo.command,
    ):
        cli.add_command(command)


_add_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (it does not exit)."""
    from ergo_py.cli.client import Unreachable

    args = list(sys.argv[1:] if argv is None else argv)
    name = args[0] if args and not args[0].startswith("-") else ""
    try:
        result = cli.main(args, prog_name="ergo-py", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("ergo-py: aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except Unreachable as exc:
        click.echo(f"ergo-py {name}: {exc}".replace(" :", ":"), err=True)
        return 1
    except (ErgoError, OSError) as exc:
        click.echo(f"ergo-py: {exc}", err=True)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
