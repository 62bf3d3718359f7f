"""The wire: term codec, handshake and framing (sans-IO), transport, acceptor, dialer."""
