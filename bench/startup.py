"""Benchmark: start-up of `image-bot --help`, `--version` and `validate FILE`. Not in make test.

Each command runs as a fresh process, RUNS times, interleaved with the floor (``python -c
pass`` on the same interpreter, so site-packages and .pth start-up count in the floor too) so
that load on the machine hits every command alike. Prints the median wall time and the median
CPU time (user + system of the child: less disturbed by other processes on a busy machine),
each as ms and as a ratio to the floor, and what the command costs above the floor.

Targets (issue 14): --help ≤ 120 ms and validate ≤ 250 ms wall on this machine.

    .venv/bin/python bench/startup.py [--runs 21] [--file policies/podinfo.yaml] [--json]
    .venv/bin/python bench/startup.py --pythonpath /tmp/old-checkout   # another source tree
    .venv/bin/python bench/startup.py --installed   # as users run it: a regular (not an
                                                    # editable) install in its own venv

The dev venv's editable install adds an import hook (a .pth file and a finder) that every
process of that venv pays, the floor too; ``--installed`` measures a ``pip install .`` into
a scratch venv (in .tools/, its dependencies taken from this venv) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS_MS = {"--help": 120.0, "validate": 250.0}


def image_bot_command() -> list[str]:
    """The console script users run (beside this interpreter), else ``python -m image_bot``."""
    script = shutil.which("image-bot", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "image_bot"]


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU milliseconds of one run; a failing command stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}: "
                         f"{done.stderr.decode(errors='replace')[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000, cpu * 1000


def installed_venv() -> Path:
    """A scratch venv with this tree pip-installed (not editable; its console script as
    users run it), sharing this venv's dependencies through a plain path entry (their .pth
    hooks are not run). Returns the venv's ``bin``."""
    venv = ROOT / ".tools" / "startup-venv"
    if not (venv / "bin" / "pip").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps",
                    "--force-reinstall", str(ROOT)], check=True)
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    (_site(venv / "bin" / "python") / "image_bot_deps.pth").write_text(
        f"{_site(Path(sys.executable))}\n")
    return venv / "bin"


def _site(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                          "'purelib'))"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--file", default="policies/podinfo.yaml",
                        help="Policy file for validate (relative to the repository).")
    parser.add_argument("--pythonpath", help="Run image_bot from this source tree instead.")
    parser.add_argument("--installed", action="store_true",
                        help="Measure a regular install in a scratch venv (.tools/).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    # 1. The commands, the floor first; the same environment for all of them.
    env = {**os.environ, "COLUMNS": "80"}
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    scratch = installed_venv() if args.installed else None
    python = str(scratch / "python") if scratch else sys.executable
    tool = [str(scratch / "image-bot")] if scratch else image_bot_command()
    commands = {"python -c pass": [python, "-c", "pass"],
                "--help": [*tool, "--help"], "--version": [*tool, "--version"],
                "validate": [*tool, "validate", args.file]}

    # 2. Interleaved runs (one warm-up each: .pyc files, page cache).
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for command in commands.values():
        measure(command, env)
    for _ in range(args.runs):
        for name, command in commands.items():
            samples[name].append(measure(command, env))

    # 3. Medians, and ratios to the floor.
    medians = {name: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
               for name, runs in samples.items()}
    floor_wall, floor_cpu = medians["python -c pass"]
    rows = [{"command": name, "wall_ms": round(wall, 1), "cpu_ms": round(cpu, 1),
             "wall_ratio": round(wall / floor_wall, 2), "cpu_ratio": round(cpu / floor_cpu, 2),
             "above_floor_ms": round(wall - floor_wall, 1), "target_ms": TARGETS_MS.get(name)}
            for name, (wall, cpu) in medians.items()]
    if args.json:
        print(json.dumps({"runs": args.runs, "tool": tool, "file": args.file,
                          "load": os.getloadavg(), "results": rows}, indent=2))
        return
    print(f"{args.runs} runs each, interleaved; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs; {' '.join(tool)}")
    print(f"{'command':<16}{'wall ms':>9}{'×floor':>8}{'cpu ms':>9}{'×floor':>8}"
          f"{'+floor ms':>11}{'target':>8}")
    for row in rows:
        target = f"{row['target_ms']:.0f}" if row["target_ms"] else ""
        print(f"{row['command']:<16}{row['wall_ms']:>9.1f}{row['wall_ratio']:>8.2f}"
              f"{row['cpu_ms']:>9.1f}{row['cpu_ratio']:>8.2f}{row['above_floor_ms']:>11.1f}"
              f"{target:>8}")


if __name__ == "__main__":
    main()
