"""Print pip constraints that pin every runtime dependency to its lower bound in pyproject.toml.

Used by .ci/run: the tests also run against the oldest versions the project claims to support.
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
for requirement in project["dependencies"]:
    # "name[extra]>=x": the pin is "name==x" (a constraint has no extras; the extra's own
    # packages follow, e.g. psycopg[binary] pins psycopg-binary to psycopg's version).
    match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)", requirement)
    if match is None:
        sys.exit(f"no lower bound in {requirement!r}")
    print(f"{match[1]}=={match[2]}")
