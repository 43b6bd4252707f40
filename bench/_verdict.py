"""How every benchmark ends: one JSON line (its figures, each budget checked by name, ``ok``),
and exit status 1 when any budget is missed. Not a benchmark itself (``make bench`` skips
``_*.py``).

    from _verdict import finish
    finish("tally", {"worst_ms": 12.3}, {"worst_under_200ms": worst < 0.2})
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, NoReturn


def finish(bench: str, figures: Mapping[str, Any], budgets: Mapping[str, bool]) -> NoReturn:
    ok = all(budgets.values())
    missed = [name for name, met in budgets.items() if not met]
    if missed:
        print(f"OVER BUDGET: {', '.join(missed)}", file=sys.stderr)
    sys.stdout.flush()
    print(json.dumps({"bench": bench, **figures, "budgets": dict(budgets), "ok": ok},
                     default=str), flush=True)
    raise SystemExit(0 if ok else 1)
