"""The node runtime: process table, names, links and monitors, routing."""
