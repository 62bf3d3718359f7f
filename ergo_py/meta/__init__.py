"""Meta-processes: processes that own an external resource (a listener, a socket).

Start one with ``node.spawn_meta(behavior)``; it is addressed by the alias
that returns, ends with the node or with ``node.send_exit_meta(alias)``.
TLS comes from the node's certificate manager, per connection, so rotation
and trust changes apply to the next connection with no restart. See
``docs/meta.md``.
"""

from ergo_py.meta import tcp, web
from ergo_py.meta.tcp import *  # noqa: F403  (the surface is each module's __all__)
from ergo_py.meta.web import *  # noqa: F403

__all__ = [*tcp.__all__, *web.__all__]
