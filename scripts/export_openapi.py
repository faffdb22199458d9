"""Write the query API's OpenAPI document to docs/openapi.json (make openapi).

The document is generated from the handler's routes and models; a test checks that the
committed copy equals what the handler serves at GET /openapi.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

from lookalike_local.lambda_runtime import load_handler  # noqa: E402


def main() -> int:
    handler = load_handler(REPO_ROOT / "functions" / "query" / "app.py", "lookalike_query_app")
    module = sys.modules[handler.__module__]
    document = json.loads(module.openapi_document())
    target = REPO_ROOT / "docs" / "openapi.json"
    target.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {target.relative_to(REPO_ROOT)} ({len(document['paths'])} paths)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
