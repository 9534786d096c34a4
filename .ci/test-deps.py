"""Exit 0 if pyxen and every package of its `test` extra are installed, else 1.

pyxen must also be imported from this checkout's src/: a clean clone on a
machine where another checkout was installed (editable) would otherwise test
the other checkout's code, or fail to import it once that one is gone.

`make test` runs this first and pip-installs `.[test]` when it fails, so the
README's test command works on a fresh machine (see the Makefile).
Usage: python3 .ci/test-deps.py [PYPROJECT]  (default: ./pyproject.toml)
"""

import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

path = sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"
with open(path, "rb") as f:
    project = tomllib.load(f)["project"]
wanted = [project["name"], *project.get("optional-dependencies", {}).get("test", [])]
missing = []
for requirement in wanted:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    if name is None:
        continue
    try:
        importlib.metadata.version(name.group(0))
    except importlib.metadata.PackageNotFoundError:
        missing.append(name.group(0))
if missing:
    print(f"make test: not installed: {', '.join(missing)}", file=sys.stderr)
    sys.exit(1)
spec = importlib.util.find_spec(project["name"])
src = Path(path).resolve().parent / "src"
origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
if origin is None or not origin.is_relative_to(src):
    print(f"make test: {project['name']} is imported from {origin}, not from {src}",
          file=sys.stderr)
    sys.exit(1)
