"""The ``name>=floor`` entries of pyproject.toml as pip constraints ``name==floor`` (Python 3.11+).

.ci/floors installs the project under them, so the floors it tests are the ones pyproject.toml
states and cannot drift from them. The runtime dependencies and the extras alike (a constraint
only acts on what is installed); an entry without a ``>=`` floor is left to pip.

``--check`` (run in the floors venv): fail unless each installed dependency is at its floor.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import tomllib  # stdlib from Python 3.11 (ruff's py310 target sorts it as third-party)

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
_FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def floors(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """{package name: its floor}, for every requirement of the project and of its extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    found: dict[str, str] = {}
    for requirement in requirements:
        match = _FLOOR.match(requirement)
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            if found.setdefault(name, match.group(2)) != match.group(2):
                raise SystemExit(f"error: {name} has two floors in {pyproject}: {found[name]} and {match.group(2)}")
    return found


def _release(version: str) -> tuple[int, ...]:
    """1.3 -> (1, 3); 2.14.1+cpu -> (2, 14, 1): trailing zeros dropped, as pip compares ==."""
    parts = [int(p) for p in re.match(r"\d+(?:\.\d+)*", version).group(0).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def check() -> None:
    """Print each floor beside the installed version; exit 1 if an installed one is not its floor."""
    wrong = []
    for name, floor in sorted(floors().items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "-"  # an extra this check does not install
        print(f"{name:26} floor {floor:10} installed {installed}")
        if installed != "-" and _release(installed) != _release(floor):
            wrong.append(name)
    if wrong:
        raise SystemExit(f"error: not installed at their floors: {', '.join(wrong)}")


def main() -> None:
    if sys.argv[1:] == ["--check"]:
        check()
        return
    for name, floor in sorted(floors().items()):
        print(f"{name}=={floor}")


if __name__ == "__main__":
    main()
