"""The embedded registrar: one node per host serves, the others register with it.

``proto`` is the wire format (sans-IO), ``server`` the serving side (the table,
the TCP service, UDP answers to other hosts), ``client`` the node's handle
(``Registrar``), which serves or registers.
"""

from ergo_py.net.registrar.client import Registrar
from ergo_py.net.registrar.proto import Route

__all__ = ["Registrar", "Route"]
