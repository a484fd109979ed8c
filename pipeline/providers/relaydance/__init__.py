"""RelayDance task API: adapter and codec."""
