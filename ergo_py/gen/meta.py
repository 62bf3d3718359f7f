"""The node's side of meta-processes: the one interface ``node/`` knows them by.

A meta-process owns an external resource (a listening socket, a connection)
and is addressed by a ``gen.Alias``. The behaviours live in ``ergo_py.meta``,
above the node; the node only needs to start one, find it by its alias and end
it, and this interface is all it imports for that (the arrows stay downward).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Protocol

from ergo_py.gen.identifiers import Alias

if TYPE_CHECKING:
    from ergo_py.gen.certmanager import CertManager

__all__ = ["AppServer", "AppServerFactory", "MetaBehavior", "MetaHost"]


class MetaHost(Protocol):
    """What a node offers a meta-process beyond what every actor gets."""

    def queued(self, to: Any) -> int:
        """Messages waiting in the mailbox of local process ``to`` (0: unknown or remote).

        For back-pressure: a meta-process stops reading its socket while its
        recipient has too much to get through.
        """
        ...


class MetaBehavior(abc.ABC):
    """What ``node.spawn_meta`` accepts.

    ``meta_actor()`` returns the ``act.Actor`` that runs the behaviour: the
    node spawns it as an ordinary process (so messages to its alias reach its
    ``handle_message``, and ``node.stop`` ends it like any process). Its
    ``init`` must return only once the resource is serving, and raise when it
    cannot be (the error reaches the caller of ``spawn_meta``); its
    ``terminate`` must release the resource. A behaviour runs once.
    """

    @abc.abstractmethod
    def meta_actor(self, host: MetaHost) -> Any:
        """A fresh ``act.Actor`` hosting this behaviour (called once, by the node)."""

    @abc.abstractmethod
    def meta_alias(self) -> Alias:
        """The alias the actor's ``init`` made for itself: the meta-process's address."""


class AppServer(MetaBehavior):
    """A meta-process serving an ASGI app; ``port`` is the bound port once it is spawned."""

    port: int


class AppServerFactory(Protocol):
    """Makes the ``AppServer`` for an ASGI app.

    How the node serves its own ``/metrics`` and observer page without
    importing ``ergo_py.meta``, which stands above it: ``ergo_py.start_node``
    hands the node ``meta.serve_app``.
    """

    def __call__(
        self, *, host: str, port: int, app: Any, tls: bool, cert_manager: CertManager | None
    ) -> AppServer: ...
