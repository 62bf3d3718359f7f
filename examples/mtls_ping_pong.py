"""Two nodes on mutual TLS; node b's certificate is rotated between calls.

Run: .venv/bin/python examples/mtls_ping_pong.py
"""

from __future__ import annotations

import ergo_py
from ergo_py import gen, lib
from ergo_py.testing import Pong, free_port  # Pong answers a call with ("pong", request)


def options(ca: lib.CertificateAuthority, name: str, registrar_port: int) -> gen.NodeOptions:
    cam = gen.create_cert_auth_manager(ca.issue(name, hosts=("127.0.0.1",)))
    cam.set_client_cas(ca.pool())
    cam.set_root_cas(ca.pool())
    cam.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    opts = gen.NodeOptions(cert_manager=cam)
    opts.network.cookie = "example"
    opts.network.registrar_port = registrar_port
    opts.network.acceptors = [gen.AcceptorOptions(host="127.0.0.1", port=free_port())]
    return opts


def main() -> None:
    ca = lib.CertificateAuthority.create("example CA")
    registrar = free_port()
    b_opts = options(ca, "b@127.0.0.1", registrar)
    with (
        ergo_py.start_node("b@127.0.0.1", b_opts) as b,
        ergo_py.start_node("a@127.0.0.1", options(ca, "a@127.0.0.1", registrar)) as a,
    ):
        b.spawn_register("pong", Pong)
        pong = gen.ProcessID("pong", "b@127.0.0.1")
        assert b_opts.cert_manager is not None
        for round_ in range(3):
            print(a.call(pong, round_), "via", _peer_fp(a))
            b_opts.cert_manager.update(ca.issue("b@127.0.0.1", hosts=("127.0.0.1",)))
            # Move the live connection onto b's new certificate, without a gap.
            b.network().reconnect("a@127.0.0.1")


def _peer_fp(node: gen.Node) -> str:
    info = node.network().info("b@127.0.0.1")
    return f"b's certificate {str(info['peer_cert_fingerprint'])[:16]}"


if __name__ == "__main__":
    main()
