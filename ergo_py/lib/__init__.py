"""Certificate helpers: generation, loading, a small CA, reloading from files."""

from ergo_py.lib.ca import CertificateAuthority
from ergo_py.lib.cert import generate_self_signed_cert, load_x509_key_pair
from ergo_py.lib.certfiles import CertFileWatcher

__all__ = [
    "CertFileWatcher",
    "CertificateAuthority",
    "generate_self_signed_cert",
    "load_x509_key_pair",
]
