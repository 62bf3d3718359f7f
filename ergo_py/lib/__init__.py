"""Certificate helpers (generation, loading, a small CA, reloading from files) and JSON logs."""

from ergo_py.lib.ca import CertificateAuthority
from ergo_py.lib.cert import generate_self_signed_cert, load_x509_key_pair
from ergo_py.lib.certfiles import CertFileWatcher
from ergo_py.lib.logs import JSONFormatter, configure_logging

__all__ = [
    "CertFileWatcher",
    "CertificateAuthority",
    "JSONFormatter",
    "configure_logging",
    "generate_self_signed_cert",
    "load_x509_key_pair",
]
