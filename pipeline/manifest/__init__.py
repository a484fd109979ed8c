"""The manifest: loading, schema, expansion into shots.

YAML is read with line numbers (:mod:`.yaml_reader`), validated (:mod:`.loader`) and expanded
(:mod:`.expand`: defaults, vars, takes, media, capability checks, fingerprints). Entry point:
:func:`pipeline.manifest.loader.load_manifest`.
"""
