"""Writes data.jsonl of the reverse-digits example: every number from 10 to 999, one row each:
{"question": "Reverse the digits of 470.", "number": "470"}. Deterministic; run from the repository root with
`python examples/reverse_digits/make_data.py`."""

import json
from pathlib import Path

rows = [{"question": f"Reverse the digits of {n}.", "number": str(n)} for n in range(10, 1000)]
out = Path(__file__).with_name("data.jsonl")
out.write_text("".join(json.dumps(r) + "\n" for r in rows))
print(f"wrote {len(rows)} rows to {out}")
