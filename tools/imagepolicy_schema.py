"""Generate the published JSON Schema of ``ImagePolicy`` from the pydantic models (`make schema`).

Editors (VS Code / yaml-language-server, IntelliJ) use ``schema/imagepolicy.schema.json`` to
complete and check policy files. It is generated, never edited by hand: the models in
``image_bot/config/models.py`` are the single source, and a test fails when the file is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from image_bot.config import models

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "schema" / "imagepolicy.schema.json"


def build() -> dict[str, Any]:
    """The schema as a dict: pydantic's, by alias (``apiVersion``), with draft and id on top."""
    schema = models.ImagePolicy.model_json_schema(by_alias=True, mode="validation")
    head = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ImagePolicy",
        "description": "An image-bot ImagePolicy document (apiVersion image-bot/v1). "
                       "Generated from image_bot/config/models.py by `make schema`.",
    }
    schema.pop("title", None)
    schema.pop("description", None)
    return {**head, **schema}


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--write" in argv:
        SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
        tmp = SCHEMA_PATH.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(SCHEMA_PATH)  # never a half-written schema
        print(f"wrote {SCHEMA_PATH.relative_to(ROOT)}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
