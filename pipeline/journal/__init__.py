"""The checkpoint journal: what a run has done, durable before anything is paid.

:mod:`.lines` defines the JSONL line format and reads it back; :mod:`.checkpoint` and
:mod:`.iothread` write it (group commit, lock); :mod:`.state` replays it into shot states and
:mod:`.snapshot` saves that replay for fast restarts.
"""
