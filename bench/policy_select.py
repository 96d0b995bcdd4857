"""Benchmark: policy.select over a large tag list (pure CPU). Not in make test.

Builds TAGS realistic tags (versions with variants and pre-releases, CI build tags,
signature tags, junk), then times, in the same run:

1. baseline: ``sorted(tags)`` plus ``versions.parse`` of every tag (the floor: reading each
   tag once and sorting text);
2. select: a semver policy keeping the current variant family (``1.25.3-alpine3.19``);
3. select: a numerical policy with pattern/extract.

Prints the best of REPEAT runs in ms and the ratio to the baseline: select must stay linear
in the number of tags (a constant factor over the baseline, whatever TAGS is).

    .venv/bin/python bench/policy_select.py [--tags 20000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

from image_bot.config import models
from image_bot.policy import strategies, versions

VARIANTS = ["", "-alpine", "-alpine3.19", "-alpine3.20", "-slim", "-bookworm", "-ls12"]
PRES = ["", "", "", "-rc.1", "-rc10", "-beta.2"]


def make_tags(count: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    tags: list[str] = []
    while len(tags) < count:
        kind = rnd.random()
        if kind < 0.7:
            parts = [rnd.randint(0, 3), rnd.randint(0, 40), rnd.randint(0, 30)]
            numbers = ".".join(map(str, parts[: rnd.choice([1, 2, 3, 3, 3])]))
            tags.append(f"{rnd.choice(['', 'v'])}{numbers}{rnd.choice(PRES)}"
                        f"{rnd.choice(VARIANTS)}")
        elif kind < 0.85:
            tags.append(f"build-{rnd.randint(1, 10**6)}")
        elif kind < 0.92:
            tags.append(f"sha256-{rnd.getrandbits(64):016x}.sig")
        else:
            tags.append(f"main-{rnd.getrandbits(28):07x}")
    return tags


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def policy(**fields: object) -> strategies.Policy:
    return strategies.build(models.PolicySpec.model_validate({"image": "x/app", **fields}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tags = make_tags(args.tags)
    now = datetime.now(UTC)
    semver = policy(select={"semver": {"range": "*"}})
    numerical = policy(select={"numerical": {}},
                       filter={"pattern": r"^build-(\d+)$", "extract": "$1"})
    baseline = best_ms(lambda: (sorted(tags), [versions.parse(t) for t in tags]), args.repeat)
    results = {
        "tags": len(tags),
        "baseline_ms": round(baseline, 2),
        "semver_ms": round(best_ms(lambda: semver.select(tags, current="1.25.3-alpine3.19",
                                                         now=now), args.repeat), 2),
        "numerical_ms": round(best_ms(lambda: numerical.select(tags, current="build-10",
                                                               now=now), args.repeat), 2),
    }
    results["semver_ratio"] = round(results["semver_ms"] / baseline, 2)
    results["numerical_ratio"] = round(results["numerical_ms"] / baseline, 2)
    if args.json:
        print(json.dumps(results))
        return
    print(f"{results['tags']} tags, best of {args.repeat}")
    print(f"  baseline (sort + parse)   {results['baseline_ms']:8.1f} ms")
    print(f"  semver select             {results['semver_ms']:8.1f} ms  "
          f"x{results['semver_ratio']}")
    print(f"  numerical select          {results['numerical_ms']:8.1f} ms  "
          f"x{results['numerical_ratio']}")


if __name__ == "__main__":
    main()
