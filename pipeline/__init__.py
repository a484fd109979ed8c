"""pipeline: an asyncio batch runner for AI video generation.

A YAML manifest of shots goes in; verified MP4 files come out under ``jobs/<name>/shots/``. Every
shot moves through upload -> submit -> poll -> fetch, and every transition is checkpointed so an
interrupted batch resumes without paying for any shot twice.
"""

__version__ = "0.1.0"
