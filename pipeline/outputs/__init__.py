"""What a run leaves for people: page, contact sheet, animatic, posters, report.

Also the status table (:mod:`.summary`) and take picks (:mod:`.picks`); :mod:`.write` writes
them all after a run.
"""
