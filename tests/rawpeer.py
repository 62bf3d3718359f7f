"""A peer node driven by hand over a real TLS socket: the tests' attacker.

It holds a certificate from the cluster's CA, runs our handshake with the
sans-IO dialer machine, and then writes whatever frames the test builds, so
a test can play a trusted peer that lies (forged replies, signals on behalf
of a third node, hostile terms).
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from typing import Any

from ergo_py.gen import create_cert_auth_manager
from ergo_py.net import frames as fr
from ergo_py.net.handshake import NEED_DATA, DialerHandshake, HandshakeComplete, PeerIntroduced
from ergo_py.net.tls import client_context_for_dial
from ergo_py.testing import Cluster

HOST = "127.0.0.1"


class RawPeer:
    """A connection to ``target`` as node ``name`` (certificate from ``cluster.ca``)."""

    def __init__(self, cluster: Cluster, name: str, target: str, timeout: float = 5.0) -> None:
        cert = cluster.ca.issue(name, hosts=(HOST,))
        cam = create_cert_auth_manager(cert)
        cam.set_root_cas(cluster.ca.pool())
        ctx, sni = client_context_for_dial(cam, False)
        port = cluster.options[target].network.acceptors[0].port
        raw = socket.create_connection((HOST, port), timeout=timeout)
        self.sock: ssl.SSLSocket = ctx.wrap_socket(raw, server_hostname=sni or HOST)
        server_der = self.sock.getpeercert(binary_form=True)
        assert server_der is not None
        self.name = name
        self.creation = int.from_bytes(os.urandom(4), "big")
        machine = DialerHandshake(
            node_name=name,
            creation=self.creation,
            peer_name=target,
            cookie=cluster.cookie,
            local_cert_fp=bytes.fromhex(cert.fingerprint),
            peer_cert_fp=hashlib.sha256(server_der).digest(),
        )
        self.sock.sendall(machine.initiate())
        done: Any = None
        while done is None:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the node closed the connection during the handshake")
            machine.receive_data(data)
            while (event := machine.next_event()) is not NEED_DATA:
                if isinstance(event, PeerIntroduced):
                    machine.admit()
                    continue
                if not isinstance(event, HandshakeComplete):
                    raise ConnectionError(f"handshake ended with {event!r}")
                done = event
            if out := machine.data_to_send():
                self.sock.sendall(out)
        self.done: HandshakeComplete = done
        self._decoder = fr.FrameDecoder(peer=target)
        self._encoder = fr.FrameEncoder()
        if machine.trailing_data:
            self._decoder.receive_data(machine.trailing_data)

    def send(self, frame: fr.Frame) -> None:
        self.sock.sendall(self._encoder.encode_frame(frame))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed_by_node(self, timeout: float = 5.0) -> bool:
        """Reads until the node closes the connection (True) or ``timeout`` passes."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except (ssl.SSLError, OSError):
            return True
        return True

    def close(self) -> None:
        self.sock.close()
