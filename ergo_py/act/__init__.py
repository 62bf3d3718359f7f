"""Actor behaviours built on pykka."""
