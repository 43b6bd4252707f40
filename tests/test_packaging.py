"""The install is declared, bounded and pinned.

Found on a first install: ``pyasn1`` imported by probes/snmp.py but not declared; no upper
bounds, so an install a week later pulled new majors of starlette and ping3; nothing pinned what a
hall installs; ``license = {text = ...}`` printed setuptools' deprecation wall.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def requirements(*, extras: bool) -> list[Requirement]:
    out = [Requirement(r) for r in PROJECT["dependencies"]]
    if extras:
        for reqs in PROJECT["optional-dependencies"].values():
            out += [Requirement(r) for r in reqs if not r.startswith("hallmon[")]
    return out


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not NAME==VERSION"
            out[canonicalize_name(name)] = Version(version)
    return out


def third_party_imports() -> set[str]:
    found = set()
    for path in [*ROOT.glob("monitor/**/*.py"), *ROOT.glob("probes/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("monitor", "probes"):
                    found.add(top)
    return found


def test_every_imported_distribution_is_declared() -> None:
    declared = {canonicalize_name(r.name) for r in requirements(extras=True)}
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(third_party_imports()):
        names = {canonicalize_name(d) for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(names)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_dependency_has_a_lower_and_an_upper_bound() -> None:
    for req in requirements(extras=True):
        ops = {s.operator for s in req.specifier}
        assert ">=" in ops and "<" in ops, f"{req}: needs >= (tested from) and < (next major)"


def test_constraints_pin_every_dependency_inside_its_bounds() -> None:
    pinned = pins()
    for req in requirements(extras=True):
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is not pinned in constraints.txt (make constraints)"
        assert req.specifier.contains(pinned[name]), (
            f"constraints.txt pins {req.name}=={pinned[name]}, outside pyproject's {req}")


def test_installed_versions_are_the_pinned_ones() -> None:
    """What this venv runs is what constraints.txt says (make installs with -c)."""
    pinned = pins()
    for req in requirements(extras=True):
        name = canonicalize_name(req.name)
        assert Version(importlib.metadata.version(req.name)) == pinned[name], (
            f"{req.name} {importlib.metadata.version(req.name)} installed, "
            f"constraints.txt pins {pinned[name]}: make .venv/bin/.installed")


def test_licence_is_an_spdx_string_and_the_build_backend_supports_it() -> None:
    assert isinstance(PROJECT["license"], str) and re.fullmatch(r"[A-Za-z0-9.\-+ ]+",
                                                                 PROJECT["license"])
    (setuptools,) = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]
                     if Requirement(r).name == "setuptools"]
    # setuptools 77 is the first release that takes the SPDX string without a warning
    assert not setuptools.specifier.contains("76.9"), setuptools
    assert setuptools.specifier.contains("77.0.3"), setuptools


def test_make_installs_with_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    installs = [line for line in makefile.splitlines()
                if "$(BIN)/pip install" in line and "-e " in line]
    assert installs and all("-c $(CONSTRAINTS)" in line for line in installs), installs
    assert re.search(r"^CONSTRAINTS := constraints.txt$", makefile, re.M)
    assert re.search(r"^constraints:$", makefile, re.M)
