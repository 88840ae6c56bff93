"""Regenerate docs/api.md from ``tessera_search.__all__`` (run after changing the API).

    python scripts/api_doc.py
"""

from __future__ import annotations

import inspect
from pathlib import Path

import tessera_search as ts
from tessera_search import _LAZY

HEAD = """# Python API

`import tessera_search as ts`: every public name, where it lives and what it is. A test
(`tests/test_query_pipeline.py`) keeps this table and `tessera_search.__all__` equal
(regenerate it with `python scripts/api_doc.py`). Library functions return results, raise
the typed errors below, warn with `TesseraSearchWarning`, or call a progress callback;
they never print (only the CLI does). Wherever a function takes `home`, it takes a
`Workspace` or a path.

| name | module | what |
|---|---|---|
"""


def main() -> None:
    rows = []
    for name in sorted(n for n in ts.__all__ if not n.startswith("__")):
        doc = (inspect.getdoc(getattr(ts, name)) or "").strip().splitlines()
        rows.append(f"| `{name}` | `tessera_search.{_LAZY.get(name, 'errors')}` | "
                    f"{(doc[0] if doc else '').replace('|', '/')} |")
    out = Path(__file__).resolve().parents[1] / "docs" / "api.md"
    out.write_text(HEAD + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
