"""The tags a cycle holds between fetching and deciding: packed, read back unchanged."""

from __future__ import annotations

from image_bot.engine import cycle


def test_packed_tags_read_back_as_the_registry_listed_them() -> None:
    tags = ["1.0.0", "latest", "1.0.0-rc.1", "v2", "1.10.0"]

    packed = cycle._Packed.of(list(tags))

    assert isinstance(packed, cycle._Packed)
    assert list(packed) == tags and len(packed) == 5 and bool(packed)
    assert packed[1] == "latest" and list(packed[1:3]) == tags[1:3]
    assert list(packed) == list(packed)  # read again: the same


def test_tags_that_cannot_be_packed_stay_a_list() -> None:
    odd = ["1.0.0", "bad\ntag"]  # no registry should answer this; kept as it came
    assert cycle._Packed.of(odd) is odd
    empty: list[str] = []
    assert cycle._Packed.of(empty) is empty


def test_a_long_list_waits_deflated() -> None:
    tags = [f"1.{minor}.{patch}" for minor in range(50) for patch in range(100)]
    packed = cycle._Packed.of(tags)
    assert list(packed) == tags
    held = len(packed._data)  # type: ignore[attr-defined]
    assert held < len("\n".join(tags)) / 3  # a 5,000-tag list waits in well under 10 KB
