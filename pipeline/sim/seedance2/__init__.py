"""Simulator of the seedance2.ink Open API: app and rules."""
