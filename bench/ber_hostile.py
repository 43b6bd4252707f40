"""Budget: no datagram costs the SNMP client more than 1 ms to drop or refuse (issue 11).

Decodes the worst datagrams found by hand (one 65 KB OID arc: 280 ms before the arc bound; many
arcs; long integers; long-form lengths everywhere) and times ``peek_request_id`` (what a foreign
datagram costs now) and ``decode`` (what a polled peer's garbage costs). Prints one JSON line and
exits non-zero over budget.

    .venv/bin/python bench/ber_hostile.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from probes.snmp_ber import BerError, decode, peek_request_id

BUDGET_S = 0.001
REPEAT = 50


def _long(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + b"\x83" + len(body).to_bytes(3, "big") + body


def reply(oid_content: bytes) -> bytes:
    vb = _long(0x30, _long(0x30, _long(0x06, oid_content) + b"\x05\x00"))
    return _long(0x30, b"\x02\x01\x01\x04\x06public"
                 + _long(0xA2, b"\x02\x01\x07\x02\x01\x00\x02\x01\x00" + vb))


CASES = {
    "one_65kb_arc": reply(b"\x2b" + b"\xff" * 65000 + b"\x01"),
    "one_600b_arc": reply(b"\x2b" + b"\xff" * 600 + b"\x01"),
    "32k_arcs": reply(b"\x2b" + b"\x81\x01" * 32000),
    "128_arcs_of_5_bytes": reply(b"\x2b" + b"\x8f\xff\xff\xff\x7f" * 127),
}


def worst(fn, data: bytes) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        try:
            fn(data)
        except BerError:
            pass
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    out: dict[str, float] = {}
    for name, data in CASES.items():
        out[f"{name}_decode_us"] = round(worst(decode, data) * 1e6, 1)
        out[f"{name}_peek_us"] = round(worst(peek_request_id, data) * 1e6, 1)
    over = [k for k, v in out.items() if v > BUDGET_S * 1e6]
    print(json.dumps({"bench": "ber_hostile", "budget_us": BUDGET_S * 1e6, **out,
                      "over": over}))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
