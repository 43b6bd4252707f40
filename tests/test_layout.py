"""The house rules that keep the layout readable, checked on every run.

1. Imports point down only (docs/architecture.md, "The import rule"): each unit has a level, and a
   module may import its own unit or units of a lower level, never a sibling or anything above.
2. Every document a file cites (``docs/x.md``, ``README.md``...) is in the repository: the
   project explains itself without anything beside it.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lower levels first. A unit is a package (its modules import each other freely) or one module.
LEVELS: dict[str, int] = {
    "probes": 0,
    "monitor": 0,  # the package root: __version__ only
    "monitor.logs": 0,
    "monitor.inventory": 1,
    "monitor.state": 2,
    "monitor.conditions": 2,
    "monitor.checks": 2,
    "monitor.traps": 2,  # pure: trap rules -> check results and events (like conditions)
    "monitor.simulate": 2,
    "monitor.workdays": 2,  # pure date logic over the inventory's site; tally and reports use it
    "monitor.store": 3,
    "monitor.scheduler": 3,
    "monitor.metrics": 3,
    "monitor.alerts": 3,
    "monitor.discover": 3,  # reads the network with probes; proposes, never touches the daemon
    "monitor.tally": 4,
    "monitor.pipeline": 4,
    "monitor.ha": 4,  # pollers' leases over the store (3) and the inventory's topology (1)
    "monitor.relay": 4,  # beats and traps between pollers, through the store (3)
    "monitor.reports": 5,
    "monitor.receiver": 5,  # the trap receiver: feeds Pipeline.handle, so above the pipeline
    "monitor.push": 5,  # push heartbeats: the same
    "monitor.api": 6,
    "monitor.report_delivery": 6,  # reports (5) through the alert outbox; the daemon runs it
    "monitor.pages": 6,  # beside the API: reads the hall and the store as it does; web mounts it
    "monitor.web": 7,
    "monitor.app": 7,
    "monitor.cli": 8,
}


def unit_of(module: str) -> str:
    """The longest LEVELS key that is the module or a package holding it."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in LEVELS:
            return name
    raise KeyError(module)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return [(line, m) for line, m in out if m.split(".")[0] in ("monitor", "probes")]


def source_files() -> list[Path]:
    return sorted([*ROOT.glob("monitor/**/*.py"), *ROOT.glob("probes/**/*.py")])


def test_every_module_has_a_level() -> None:
    for path in source_files():
        unit_of(module_name(path))  # raises KeyError for a module nobody placed


def test_imports_point_down_only() -> None:
    problems = []
    for path in source_files():
        me = unit_of(module_name(path))
        for line, target in imports_of(path):
            other = unit_of(target)
            if other == me or other == "monitor":
                continue
            if LEVELS[other] >= LEVELS[me]:
                problems.append(
                    f"{path.relative_to(ROOT)}:{line}: {me} (level {LEVELS[me]}) imports "
                    f"{target} (level {LEVELS[other]})"
                )
    assert not problems, "\n".join(problems)


def test_probes_know_nothing_of_monitor() -> None:
    for path in ROOT.glob("probes/**/*.py"):
        for line, target in imports_of(path):
            assert not target.startswith("monitor"), f"{path}:{line}: probes imports {target}"


_CITED = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b|\b(FIELD-NOTES|ARCHITECTURE)\b")


def tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    keep = (".py", ".md", ".yml", ".yaml", ".toml", ".service", ".cfg", ".txt", ".sh", ".json")
    return [ROOT / p for p in out if p.endswith(keep) or p in ("Makefile", ".ci/run")]


def test_no_file_cites_a_document_outside_the_repo() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    problems = []
    for path in tracked_text_files():
        if not path.exists() or path == Path(__file__):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            for m in _CITED.finditer(line):
                if m.group(2):
                    problems.append(f"{path.relative_to(ROOT)}:{n}: cites {m.group(2)}")
                    continue
                doc = m.group(1)
                if "://" in line[max(0, m.start() - 40) : m.start()]:
                    continue  # a web address, not a file of ours
                here = (path.parent / doc).exists() or (ROOT / doc).exists()
                if not here:
                    problems.append(f"{path.relative_to(ROOT)}:{n}: cites {doc}, not in the repo")
    assert not problems, "\n".join(problems)
