"""``ergo-py send`` / ``ergo-py call``: poke a process on a running node.

Both reach the node as ``inspect`` does (a short-lived client node with a
client certificate; the same options). The message is read as JSON when it
parses as JSON (``'{"n": 1}'``, ``42``, ``'"text"'``) and is taken as a plain
string otherwise (``hello``); ``--string`` forces a string. ``call`` prints
the answer as JSON (values JSON cannot hold are shown with ``repr``).

Exit status: 0 done, 1 the node could not be reached, did not answer, or the
process is unknown or failed; 2 bad arguments or files.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ergo_py import gen
from ergo_py.cli import client
from ergo_py.cli.inspect import configure_logging
from ergo_py.cli.node import plain
from ergo_py.net.retry import retry_until

__all__ = ["call_command", "parse_message", "send_command"]


def parse_message(text: str, as_string: bool) -> Any:
    """``text`` as JSON if it is JSON (and not ``--string``), else the string itself."""
    if as_string:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _deliver(
    node_name: str | None, process: str, opts: dict[str, Any], act: str, message: Any
) -> Any:
    configure_logging(opts["verbose"])
    plan = client.ClientPlan(node_name, opts)
    node = client.start_client_node(plan)
    target = gen.ProcessID(process, plan.target)
    deadline = time.monotonic() + plan.timeout
    try:

        def connected() -> None:  # send() to a remote name does not wait for the connection
            node.network().get_node(plan.target)

        retry_until(deadline, connected, (gen.ErrNoConnection,), retry_if=client.not_listening)
        if act == "send":
            node.send(target, message)
            return None
        return node.call(target, message, timeout=max(0.1, deadline - time.monotonic()))
    except gen.ErrNoConnection as exc:
        raise client.Unreachable(client.explain(exc, plan)) from None
    except gen.ErrTimeout:
        raise client.Unreachable(f"{target} did not answer within {plan.timeout:g} s") from None
    except (gen.ErrProcessUnknown, gen.ErrNameUnknown):
        missing = f"{plan.target} has no process registered as {process!r}"
        raise client.Unreachable(missing) from None
    except gen.ErrProcessTerminated as exc:
        raise client.Unreachable(f"{target} ended while handling the request: {exc}") from None
    finally:
        node.stop()


_string = click.option(
    "--string", "as_string", is_flag=True, help="Send MESSAGE as a string even if it is JSON."
)


@click.command("send")
@click.argument("node")
@click.argument("process")
@click.argument("message")
@client.target_options
@_string
def send_command(node: str, process: str, message: str, as_string: bool, **opts: Any) -> None:
    """Send MESSAGE to the process registered as PROCESS on NODE (no answer is awaited)."""
    _deliver(node, process, opts, "send", parse_message(message, as_string))
    click.echo(f"sent to {process} on {node}")


@click.command("call")
@click.argument("node")
@click.argument("process")
@click.argument("message")
@client.target_options
@_string
def call_command(node: str, process: str, message: str, as_string: bool, **opts: Any) -> None:
    """Call the process registered as PROCESS on NODE with MESSAGE and print its answer."""
    answer = _deliver(node, process, opts, "call", parse_message(message, as_string))
    click.echo(json.dumps(plain(answer), default=repr))
