"""Write the JSON Schema of every input event type to docs/schemas/<type>.json.

The schemas are generated from the event models (``streamproc.events.event_json_schema``);
run this after changing the event contract. tests/unit/test_events.py fails when a
published schema differs from the models.

    python deploy/tools/write_schemas.py
"""

from __future__ import annotations

import json
from pathlib import Path

from streamproc.events import EVENT_MODELS, event_json_schema

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def main() -> None:
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    for event_type in EVENT_MODELS:
        path = SCHEMAS / f"{event_type}.json"
        path.write_text(json.dumps(event_json_schema(event_type), indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
