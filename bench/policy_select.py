"""Benchmark: tag selection throughput, one core, pure CPU (no registry). Not in make test.

Tags are realistic: each repository gets a release history (semver, v-prefixed in some
repositories, pre-releases before their release, variants such as ``-alpine3.20`` and
``-slim`` in some, floating ``1.2`` / ``1`` tags), CI tags (``sha-abc1234``, ``pr-123``,
``nightly-20240115``), ``latest``-style tags and cosign signatures. Timed in the same run:

1. floor: ``sorted(set(tags))`` and one regular-expression match per tag (reading each tag
   once and ordering them: what any selection must at least do);
2. a semver range policy (``^M`` around the current ``M.m.p``), cold (parse caches cleared
   before each run) and warm (parses memoised, as from the second policy or cycle on), with
   the explanation (``image-bot test --explain``) and as the engine decides
   (``explain=False``: the best two only);
3. ``*`` keeping the current tag's family and precision (thousands ranked), and a numerical
   policy with pattern/extract.

Prints tags/s (input tags over the best of REPEAT runs of CPU time, ``process_time``: the
machine is shared, and a core's time is what is claimed) and each time's ratio to the floor.
``--fleet`` adds the selection CPU of two cycles of POLICIES policies of FLEET_TAGS tags,
spread over IMAGES images (default 500 and 50), each image's tags generated, decided by its
policies, then dropped; more distinct tags than the memo holds make cycle 2 no cheaper.

    .venv/bin/python bench/policy_select.py [--tags 20000] [--repeat 7] [--fleet] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import time
from collections.abc import Callable
from typing import Any

from image_bot.config import models
from image_bot.policy import strategies

VARIANTS = ["alpine", "alpine3.19", "alpine3.20", "slim", "bookworm", "ls12"]
PRES = ["rc.{}", "rc{}", "beta.{}", "alpha.{}", "beta{}"]
FLOATING = ["latest", "stable", "edge", "main", "nightly"]
# the floor's one match per tag: about what versions.parse's first step costs
FLOOR_PATTERN = re.compile(r"^[vV]?\d+(?:\.\d+){0,3}(?:-[0-9A-Za-z_.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def repository_tags(count: int, seed: int) -> tuple[list[str], str]:
    """``count`` unique tags of one repository, and a current tag (a release, no variant)."""
    rnd = random.Random(seed)
    prefix = "v" if rnd.random() < 0.3 else ""
    variants = rnd.sample(VARIANTS, k=rnd.choice([0, 0, 1, 2]))
    major, minor, patch = rnd.randint(0, 2), rnd.randint(0, 20), 0
    tags: dict[str, None] = dict.fromkeys(FLOATING)
    releases: list[str] = []
    while len(tags) < count:
        kind = rnd.random()
        if kind < 0.5:  # a release, its variants and floating tags
            if rnd.random() < 0.002:
                major, minor, patch = major + 1, 0, 0
            elif rnd.random() < 0.08:
                minor, patch = minor + 1, 0
            else:
                patch += 1
            version = f"{prefix}{major}.{minor}.{patch}"
            releases.append(version)
            for name in (version, f"{prefix}{major}.{minor}", f"{prefix}{major}"):
                tags[name] = None
                for variant in variants:
                    tags[f"{name}-{variant}"] = None
        elif kind < 0.6:  # a pre-release of the next patch
            pre = rnd.choice(PRES).format(rnd.randint(1, 12))
            tags[f"{prefix}{major}.{minor}.{patch + 1}-{pre}"] = None
        elif kind < 0.85:
            tags[f"sha-{rnd.getrandbits(28):07x}"] = None
        elif kind < 0.9:
            tags[f"pr-{rnd.randint(1, 9999)}"] = None
        elif kind < 0.95:
            tags[f"sha256-{rnd.getrandbits(256):064x}.sig"] = None
        else:
            tags[f"nightly-2024{rnd.randint(1, 12):02}{rnd.randint(1, 28):02}"] = None
    tags_list = list(tags)[:count]
    rnd.shuffle(tags_list)  # registries list in their own order
    return tags_list, releases[len(releases) * 2 // 5] if releases else "latest"


def policy(**fields: Any) -> strategies.Policy:
    return strategies.build(models.PolicySpec.model_validate({"image": "x/app", **fields}))


def semver_range(current: str) -> str:
    return f"^{current.lstrip('v').split('.')[0]}"


def forget_parses() -> None:
    strategies.forget()


def best_seconds(fn: Callable[[], object], repeat: int,
                 before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(repeat):
        if before:
            before()
        gc.collect()
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def floor(tags: list[str]) -> list[object]:
    match = FLOOR_PATTERN.match
    return [match(tag) for tag in sorted(set(tags))]


def single(count: int, repeat: int) -> dict[str, Any]:
    tags, current = repository_tags(count, seed=7)
    ranged = policy(select={"semver": {"range": semver_range(current)}})
    family = policy(select={"semver": {"range": "*"}})
    numerical = policy(select={"numerical": {}}, filter={"pattern": r"^pr-(\d+)$",
                                                         "extract": "$1"})
    alpine = next((t for t in tags if "-alpine" in t), current)

    def semver_select() -> object:
        return ranged.select(tags, current=current)

    floor_s = best_seconds(lambda: floor(tags), repeat)
    timed = {
        "floor": floor_s,
        "semver_cold": best_seconds(semver_select, repeat, before=forget_parses),
        "semver_warm": best_seconds(semver_select, repeat),
        "semver_engine": best_seconds(
            lambda: ranged.select(tags, current=current, explain=False), repeat),
        "family_warm": best_seconds(lambda: family.select(tags, current=alpine), repeat),
        "numerical": best_seconds(lambda: numerical.select(tags, current="pr-10"), repeat),
    }
    decision = semver_select()
    assert isinstance(decision, strategies.Decision)
    unexplained = ranged.select(tags, current=current, explain=False)
    assert (unexplained.tag, unexplained.reason) == (decision.tag, decision.reason)
    return {
        "tags": len(tags), "range": ranged.range.text if ranged.range else "", "current": current,
        "selected": decision.tag, "ranked": len(decision.ranked),
        **{f"{name}_tags_per_s": round(len(tags) / s) for name, s in timed.items()},
        **{f"{name}_ratio": round(s / floor_s, 2) for name, s in timed.items()},
    }


def fleet(policies: int, images: int, count: int) -> dict[str, Any]:
    """Selection CPU of two cycles of ``policies`` policies spread over ``images`` images of
    ``count`` tags, each image's tags generated, decided by its policies, then dropped."""
    built: list[list[tuple[strategies.Policy, str]]] = [[] for _ in range(images)]
    for index in range(policies):
        image = index % images
        tags, current = repository_tags(count, seed=1000 + image)
        range_text = semver_range(current) if index % 3 else "*"
        built[image].append((policy(select={"semver": {"range": range_text}}), current))
    forget_parses()
    cycles = []
    for _ in range(2):
        cpu = 0.0
        for image, chosen in enumerate(built):
            tags, _current = repository_tags(count, seed=1000 + image)
            start = time.process_time()
            for each, current in chosen:  # as the engine decides
                each.select(tags, current=current, explain=False)
            cpu += time.process_time() - start
        cycles.append(cpu)
    return {"policies": policies, "images": images, "tags_each": count,
            "cycle1_cpu_s": round(cycles[0], 2), "cycle2_cpu_s": round(cycles[1], 2),
            "cycle2_tags_per_s": round(policies * count / cycles[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--fleet", action="store_true", help="also 500 policies x 5000 tags")
    parser.add_argument("--policies", type=int, default=500)
    parser.add_argument("--images", type=int, nargs="+", default=[500, 50],
                        help="fleet shapes: the policies spread over this many images")
    parser.add_argument("--fleet-tags", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = single(args.tags, args.repeat)
    if args.fleet:
        results["fleet"] = [fleet(args.policies, images, args.fleet_tags)
                            for images in args.images]
    if args.json:
        print(json.dumps(results))
        return
    print(f"{results['tags']} tags, range {results['range']!r}, current {results['current']}, "
          f"best of {args.repeat} (ratio: time over the floor's)")
    for name, label in (("floor", "floor (sort + regex match)"),
                        ("semver_cold", "semver range, cold parse"),
                        ("semver_warm", "semver range, memoised"),
                        ("semver_engine", "the same, engine (no explain)"),
                        ("family_warm", "semver *, current's family"),
                        ("numerical", "numerical, pattern/extract")):
        print(f"  {label:<28} {results[f'{name}_tags_per_s']:>11,} tags/s  "
              f"x{results[f'{name}_ratio']}")
    for f in results.get("fleet", []):
        print(f"{f['policies']} policies over {f['images']} images x {f['tags_each']} tags: "
              f"selection CPU {f['cycle1_cpu_s']} s (cycle 1, cold), {f['cycle2_cpu_s']} s "
              f"(cycle 2), {f['cycle2_tags_per_s']:,} tags/s")


if __name__ == "__main__":
    main()
