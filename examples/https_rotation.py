"""An HTTPS endpoint served by an actor, its certificate rotated while a client stays connected.

Run: .venv/bin/python examples/https_rotation.py
"""

from __future__ import annotations

import hashlib
import ssl
from typing import Any

import httpx

import ergo_py
from ergo_py import act, gen, lib, meta


class Hello(act.Actor):
    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        who = "with a client certificate" if request.client_cert else "anonymous"
        return meta.WebResponse(200, (("content-type", "text/plain"),), f"hello, {who}\n".encode())


def fingerprint(response: httpx.Response) -> str:
    sslobj = response.extensions["network_stream"].get_extra_info("ssl_object")
    return hashlib.sha256(sslobj.getpeercert(True)).hexdigest()[:16]


def main() -> None:
    ca = lib.CertificateAuthority.create("example CA")
    cam = gen.create_cert_auth_manager(ca.issue("web@localhost", hosts=("127.0.0.1",)))
    options = gen.NodeOptions(cert_manager=cam)
    options.network.mode = gen.NetworkMode.DISABLED
    with ergo_py.start_node("web@localhost", options) as node:
        handler = meta.WebHandler(meta.WebHandlerOptions(node.spawn(Hello)))
        web = meta.WebServer(meta.WebServerOptions(host="127.0.0.1", port=0, app=handler))
        node.spawn_meta(web)
        url = f"https://127.0.0.1:{web.port}/"
        trust = ssl.create_default_context(cadata=ca.pool().to_pem())
        with httpx.Client(verify=trust) as kept:
            r = kept.get(url)
            print(f"kept-alive connection: {fingerprint(r)} {r.text.strip()}")
            cam.update(ca.issue("web@localhost", hosts=("127.0.0.1",)))
            print(f"rotated to {cam.get_certificate().fingerprint[:16]}")
            with httpx.Client(verify=trust) as fresh:
                r = fresh.get(url)
                print(f"new connection:        {fingerprint(r)} {r.text.strip()}")
            r = kept.get(url)
            print(f"kept-alive connection: {fingerprint(r)} {r.text.strip()} (still the old one)")


if __name__ == "__main__":
    main()
