"""An Ergo node driven by hand over a real socket: the ergo dialect's attacker.

It speaks EHS with our sans-IO dialer machine (so it passes the cookie) and
then writes whatever bytes the test builds: packets from ``codec``, or
garbage. Or it stops anywhere on the way (TCP, TLS, the handshake).
"""

from __future__ import annotations

import os
import socket
import ssl

from ergo_py.net.ergo import enp
from ergo_py.net.ergo.handshake import DialerMachine, Established, Local

HOST = "127.0.0.1"


def tls_client(sock: socket.socket) -> ssl.SSLSocket:
    """TLS as Ergo's dialer with ``InsecureSkipVerify``: no client certificate, no check."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(sock, server_hostname=HOST)


def closed_by_node(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Reads until the node closes the connection (True) or ``timeout`` passes (False)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


class RawErgoPeer:
    """A TLS connection to ``port`` as Ergo node ``name``; ``handshake()`` runs EHS."""

    def __init__(self, port: int, name: str, cookie: str, timeout: float = 5.0) -> None:
        self.name = name
        self.cookie = cookie
        self.creation = int.from_bytes(os.urandom(4), "big") | 1
        self.sock: socket.socket = tls_client(socket.create_connection((HOST, port), timeout))
        self.done: Established | None = None
        self.codec: enp.Codec | None = None

    def handshake(self) -> Established:
        machine = DialerMachine(Local(self.name, self.creation, self.cookie))
        self.sock.sendall(machine.initiate())
        result = None
        while result is None:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the node closed the connection during the handshake")
            result = machine.receive_data(data)
            if out := machine.data_to_send():
                self.sock.sendall(out)
        assert isinstance(result, Established)
        self.done = result
        self.codec = enp.Codec(
            self.name, self.creation, result.peer, result.creation, result.caches
        )
        return result

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed_by_node(self, timeout: float = 5.0) -> bool:
        return closed_by_node(self.sock, timeout)

    def close(self) -> None:
        self.sock.close()
