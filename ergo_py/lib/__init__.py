"""Certificate helpers: generation, loading, a small CA."""

from ergo_py.lib.ca import CertificateAuthority
from ergo_py.lib.cert import generate_self_signed_cert, load_x509_key_pair

__all__ = ["CertificateAuthority", "generate_self_signed_cert", "load_x509_key_pair"]
