"""The published ImagePolicy JSON Schema: current with the models, and it accepts what we ship."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

import imagepolicy_schema

ROOT = Path(__file__).resolve().parents[2]
POLICIES = sorted((ROOT / "policies").glob("*.yaml"))


def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(imagepolicy_schema.SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _documents(path: Path) -> list[Any]:
    return [d for d in YAML(typ="safe", pure=True).load_all(path.read_text()) if d is not None]


def test_published_schema_is_current() -> None:
    published = imagepolicy_schema.SCHEMA_PATH.read_text(encoding="utf-8")
    assert published == imagepolicy_schema.render(), (
        "schema/imagepolicy.schema.json is out of date with image_bot/config/models.py: "
        "run `make schema` and commit the result")


@pytest.mark.parametrize("path", POLICIES, ids=[p.name for p in POLICIES])
def test_every_shipped_policy_matches_the_schema(path: Path) -> None:
    validator = _validator()
    for document in _documents(path):
        problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                    for e in validator.iter_errors(document)]
        assert problems == [], f"{path.name}: {problems}"


def test_schema_rejects_what_the_models_reject() -> None:
    validator = _validator()
    good = _documents(POLICIES[0])[0]
    assert validator.is_valid(good)
    misspelt = {**good, "spec": {**good["spec"], "selct": good["spec"]["select"]}}
    assert [e.message for e in validator.iter_errors(misspelt)] == [
        "Additional properties are not allowed ('selct' was unexpected)"]
    wrong_kind = {**good, "kind": "ImageRepository"}
    assert not validator.is_valid(wrong_kind)
    no_name = {**good, "metadata": {}}
    assert [e.message for e in validator.iter_errors(no_name)] == ["'name' is a required property"]
