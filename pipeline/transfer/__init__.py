"""Moving bytes: media uploads and verified result downloads.

:mod:`.upload` and :mod:`.storage` put media in object storage behind presigned URLs;
:mod:`.download` and :mod:`.playable` fetch results, check them and write them atomically.
"""
