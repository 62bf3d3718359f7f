"""Certificate helpers: generation, loading, a small CA."""
