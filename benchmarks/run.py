"""``make bench``: every benchmark, each beside its baseline measured in the same run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import baseline_tls
    import local_messaging
    import node_network

    from ergo_py.lib import CertificateAuthority

    local_messaging.main([])

    ca = CertificateAuthority.create("bench CA")
    material = baseline_tls.TLSMaterial(
        ca_pem=ca.pool().to_pem().encode(),
        server=ca.issue("server@127.0.0.1", hosts=("127.0.0.1",)).to_pem(),
        client=ca.issue("client@127.0.0.1", hosts=("127.0.0.1",)).to_pem(),
    )
    r = baseline_tls.measure(material)
    print()
    print("raw asyncio mTLS ceiling (server in another process)")
    print(f"  one-way frames/s (64 per write): {r.one_way_per_s:,.0f}")
    print(f"  request/response RTT p50 / p99:  {r.rtt_p50_us:.0f} / {r.rtt_p99_us:.0f} us")
    print(f"  connection set-ups/s:            {r.setups_per_s:,.0f}")
    print()
    node_network.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
