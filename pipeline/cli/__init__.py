"""The command-line interface; the only code that reads environment variables.

:mod:`.main` parses and dispatches the commands; :mod:`.endpoints` decides which endpoints and key
variables a run may use; :mod:`.models_view` is ``pipeline models``.
"""
