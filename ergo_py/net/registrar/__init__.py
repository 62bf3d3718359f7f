"""Registrars: the ``Registrar`` protocol and the embedded registrar that implements it.

``Registrar`` is what the node talks to; it is declared in ``gen.registrar``
so that options can name it, and hands out ``gen.Route``. The embedded
registrar, the default, is split by job: ``proto`` is its wire format
(sans-IO), ``server`` the serving side (the table, the TCP service, UDP
answers to other hosts) and ``client`` the node's handle
(``EmbeddedRegistrar``), which serves or registers. ``etcd`` is the
multi-host one (``EtcdRegistrar``, the ``etcd`` extra).
"""

from ergo_py.gen.registrar import Registrar
from ergo_py.net.registrar.client import EmbeddedRegistrar
from ergo_py.net.registrar.etcd import EtcdRegistrar
from ergo_py.net.registrar.etcd_trust import EtcdTrust, publish_trust

__all__ = ["EmbeddedRegistrar", "EtcdRegistrar", "EtcdTrust", "Registrar", "publish_trust"]
