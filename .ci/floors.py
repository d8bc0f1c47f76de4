"""Print a pip constraints file that pins every requirement in pyproject.toml to its floor.

    python .ci/floors.py [--extra NAME ...] [--except torch==VERSION ...] > floors.txt
    pip install -e '.[test]' -c floors.txt

Each `name>=X` of the project's dependencies (and of the extras named, every extra by default)
becomes `name==X`; a requirement without a `>=` floor is an error, since it could not be tested at
its lowest. `--except name==V` pins that package to V instead (torch, whose floor is verified
separately and whose CPU build the machine has at hand).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def floor(requirement: str) -> tuple[str, str]:
    """('torch', '2.4') from 'torch>=2.4'; ('optuna', '5') from 'optuna>=5,<6'."""
    m = REQUIREMENT.match(requirement)
    if not m:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    name, spec = m.group(1), m.group(3)
    floors = [s.strip()[2:].strip() for s in spec.split(",") if s.strip().startswith(">=")]
    if len(floors) != 1:
        raise ValueError(f"{requirement!r} has no single '>=' floor to test")
    return canonical(name), floors[0]


def floors(pyproject: dict, extras: list[str] | None) -> dict[str, str]:
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    requirements = list(project["dependencies"])
    for extra in optional if extras is None else extras:
        if extra not in optional:
            raise ValueError(f"pyproject.toml has no extra {extra!r}")
        requirements += optional[extra]
    out: dict[str, str] = {}
    for requirement in requirements:
        name, version = floor(requirement)
        if out.setdefault(name, version) != version:
            raise ValueError(f"{name} has two floors: {out[name]} and {version}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", default=str(Path(__file__).resolve().parents[1] / "pyproject.toml"))
    parser.add_argument("--extra", action="append", help="an extra whose floors to pin [default: every extra]")
    parser.add_argument("--except", dest="instead", action="append", default=[], metavar="NAME==VERSION",
                        help="pin this package to this version instead of its floor")
    args = parser.parse_args(argv)
    try:
        with open(args.pyproject, "rb") as f:
            pins = floors(tomllib.load(f), args.extra)
        for pin in args.instead:
            name, sep, version = pin.partition("==")
            if not sep or canonical(name) not in pins:
                raise ValueError(f"--except {pin}: not NAME==VERSION of a requirement in pyproject.toml")
            pins[canonical(name)] = version.strip()
    except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError) as e:
        print(f"floors: error: {e}", file=sys.stderr)
        return 2
    print("# The floors of pyproject.toml, made by .ci/floors.py")
    for name, version in pins.items():
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
