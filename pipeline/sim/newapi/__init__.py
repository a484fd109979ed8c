"""Simulator of a New API gateway: app, rules and tasks."""
