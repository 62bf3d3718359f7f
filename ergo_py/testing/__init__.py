"""Multi-node test harness."""
