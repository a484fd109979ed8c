"""Simulator of the Venice video API: app, its own model table, rules and job state."""
