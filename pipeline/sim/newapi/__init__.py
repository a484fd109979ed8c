"""Simulator of a New API gateway: app and rules."""
