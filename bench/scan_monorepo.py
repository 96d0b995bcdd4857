"""Benchmark: find and edit every reference to one image in a large config repository.
Not in make test.

A synthetic repository of FILES YAML files (Deployments, Helm values, kustomizations,
Compose files, ConfigMaps with block scalars) in 100 folders, of which PERCENT mention the
image `ghcr.io/acme/web` (in every kind of reference). Two runs on two identical copies, in
one process, same machine:

1. image-bot's update stage: `scanning.find` (text pre-filter, then parse only the files that
   mention the repository) + `rewriting.apply` (splice, re-parse, verify, atomic write);
2. the baseline: the same detection and the same edits, but every file is parsed with
   ruamel.yaml (what a tool that loads each file to look for images does).

Both must change exactly the same files to exactly the same bytes. Prints both times and the
ratio baseline/image-bot. Goal: ratio >= 20.

    .venv/bin/python bench/scan_monorepo.py [--files 10000] [--percent 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from image_bot import refs
from image_bot.update import rewriting, scanning, yamlgraph
from image_bot.update.result import UpdateResult

IMAGE = refs.parse("ghcr.io/acme/web")
OTHERS = ["ghcr.io/acme/api", "nginx", "bitnami/redis", "quay.io/prometheus/node-exporter",
          "registry.example.com/team/worker", "postgres", "docker.io/library/busybox"]

DEPLOYMENT = """\
# {name}: generated for the benchmark
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}, tier: backend}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      initContainers:
        - name: init
          image: "{init}"   # init step
      containers:
        - name: main
          image: {main}
          ports: [{{containerPort: 8080}}]
          env:
            - {{name: LOG_LEVEL, value: info}}
            - {{name: REPLICA, value: "{replicas}"}}
        - name: sidecar
          image: '{sidecar}'
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-config
data:
  app.conf: |
    listen 8080;
    workers {replicas};
  notes: >-
    folded text that
    spans lines
"""

VALUES = """\
# Helm values for {name}
image:
  registry: {registry}
  repository: {repository}
  tag: {tag}
  pullPolicy: IfNotPresent
worker:
  image:
    repository: {other}
    tag: "1.{replicas}.0"
resources:
  limits: {{cpu: 500m, memory: 256Mi}}
ingress:
  enabled: false
  hosts: [{name}.example.com]
"""

KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [deployment.yaml]
images:
  - name: {name}
    newName: {image}
    newTag: {tag}
"""

COMPOSE = """\
services:
  {name}:
    image: {main}
    ports: ["8080:8080"]
  cache:
    image: {sidecar}
"""


def _ref(image: str, rng: random.Random) -> str:
    return f"{image}:1.{rng.randint(0, 30)}.{rng.randint(0, 9)}"


def generate(root: Path, *, files: int, percent: float, seed: int = 5) -> int:
    """Write the repository; returns how many files mention the image."""
    rng = random.Random(seed)
    mentioning = set(rng.sample(range(files), round(files * percent / 100)))
    for i in range(files):
        folder = root / f"apps/team-{i % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        hit = i in mentioning
        other = rng.choice(OTHERS)
        kind = i % 4
        name = f"svc-{i}"
        if kind == 0:
            text = DEPLOYMENT.format(
                name=name, replicas=rng.randint(1, 9), init=_ref(rng.choice(OTHERS), rng),
                main=_ref(IMAGE.name if hit else other, rng),
                sidecar=_ref(rng.choice(OTHERS), rng))
        elif kind == 1:
            registry, repository = (("ghcr.io", "acme/web") if hit else
                                    ("registry.example.com", f"team/{name}"))
            text = VALUES.format(name=name, registry=registry, repository=repository,
                                 tag=f"2.{rng.randint(0, 9)}.0", other=other,
                                 replicas=rng.randint(1, 9))
        elif kind == 2:
            text = KUSTOMIZATION.format(name=name, image=IMAGE.name if hit else other,
                                        tag=f"3.{rng.randint(0, 9)}.1")
        else:
            text = COMPOSE.format(name=name, main=_ref(IMAGE.name if hit else other, rng),
                                  sidecar=_ref(rng.choice(OTHERS), rng))
        (folder / f"{name}.yaml").write_text(text)
    return len(mentioning)


def _edit(root: Path, references: list[scanning.Reference]) -> UpdateResult:
    edits = [rewriting.Edit(reference, "9.9.9", "bench") for reference in references]
    return rewriting.apply(root, edits)


def image_bot(root: Path) -> UpdateResult:
    scan = scanning.find(root, IMAGE, ["**"])
    assert not scan.skipped, scan.skipped
    return _edit(root, list(scan.references))


def baseline(root: Path) -> UpdateResult:
    """Parse every file with ruamel.yaml (no pre-filter), then the same detection and edits."""
    references: list[scanning.Reference] = []
    for path in scanning.candidate_files(root, ["**"]):
        text = path.read_text()
        relative = path.relative_to(root).as_posix()
        references += scanning.references_in(text, IMAGE, relative)  # ruamel compose_all
    return _edit(root, references)


def _timed(run: object, root: Path) -> tuple[float, UpdateResult]:
    yamlgraph.trees.cache_clear()  # no help from a parse cached by the other run
    started = time.perf_counter()
    result = run(root)  # type: ignore[operator]
    return time.perf_counter() - started, result


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.yaml"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--percent", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scan-monorepo-") as tmp:
        ours, theirs = Path(tmp, "ours"), Path(tmp, "baseline")
        mentioning = generate(ours, files=args.files, percent=args.percent)
        shutil.copytree(ours, theirs)
        original = _snapshot(ours)  # also warms the page cache for both copies
        _snapshot(theirs)
        ours_seconds, ours_result = _timed(image_bot, ours)
        base_seconds, base_result = _timed(baseline, theirs)
        after = _snapshot(ours)
        assert after == _snapshot(theirs), "both runs must write the same bytes"
        changed = sorted(f for f in after if after[f] != original[f])
        assert changed == sorted(ours_result.files) == sorted(base_result.files)
        assert len(changed) == mentioning
    report = {
        "files": args.files, "files_mentioning_image": mentioning,
        "references_edited": len(ours_result.changes),
        "image_bot_seconds": round(ours_seconds, 3), "baseline_seconds": round(base_seconds, 3),
        "ratio": round(base_seconds / ours_seconds, 1), "goal": 20,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.files} files, {mentioning} mention {IMAGE.name}, "
              f"{report['references_edited']} references edited in each run")
        print(f"image-bot (pre-filter, parse {mentioning} files): {ours_seconds:8.2f} s")
        print(f"baseline (parse every file with ruamel.yaml):   {base_seconds:8.2f} s")
        print(f"ratio baseline / image-bot: {report['ratio']}x (goal >= 20x)")
    sys.exit(0 if report["ratio"] >= 20 else 1)


if __name__ == "__main__":
    main()
