"""seedance2.ink Open API: adapter and codec."""
