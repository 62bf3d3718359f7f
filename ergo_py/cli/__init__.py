"""The ergo-py command."""
