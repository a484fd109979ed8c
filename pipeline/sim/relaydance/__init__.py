"""Simulator of the RelayDance task API: app, rules and task store."""
