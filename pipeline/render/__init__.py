"""Offline rendering of previs clips (PyAV and Pillow), for ``local`` and the outputs."""
