"""How long the `clip2point` command takes to answer what needs no model: ``--help``, a mistyped option and a missing
input file, beside an empty interpreter and ``import torch``, in fresh interpreters, side by side in one run.

Each command runs ``--repeats`` times, the commands interleaved (so that load from other processes hits them alike);
the median wall time is reported, with the share of the machine's CPU other processes used meanwhile. The command
runs as ``python -m clip2point_apps.cli`` (the ``clip2point`` console script imports the same module); set
``PYTHONPATH`` to measure another checkout.

    python benchmarks/cli_startup.py
    python benchmarks/cli_startup.py --repeats 9 --json cli_startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

CLI = [sys.executable, "-m", "clip2point_apps.cli"]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    "clip2point --help": [*CLI, "--help"],
    "clip2point classify --lables x (typo)": [*CLI, "classify", "--lables", "x"],
    "clip2point classify missing.ply --labels a,b": [*CLI, "classify", "missing.ply", "--labels", "a,b"],
}


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of the machine's CPU time that was busy between two ``/proc/stat`` samples."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total if total else 0.0


def cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine (Linux; zeros elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:9]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    codes: dict[str, set[int]] = {name: set() for name in COMMANDS}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    before = cpu_times()
    with tempfile.TemporaryDirectory() as empty:  # missing.ply is missing there
        for _ in range(args.repeats):
            for name, command in COMMANDS.items():
                start = time.perf_counter()
                result = subprocess.run(command, cwd=empty, env=env, capture_output=True, check=False)
                times[name].append(time.perf_counter() - start)
                codes[name].add(result.returncode)
    load = busy_share(before, cpu_times())
    results = {
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "busy_share_during_run": round(load, 2),
        },
        "repeats": args.repeats,
        "median_seconds": {name: round(statistics.median(t), 3) for name, t in times.items()},
        "exit_codes": {name: sorted(c) for name, c in codes.items()},
    }
    print(f"{args.repeats} runs each, interleaved; the machine's CPU was {100 * load:.0f}% busy meanwhile")
    print("| command | median | exit code |\n|---|---:|---:|")
    for name, seconds in results["median_seconds"].items():
        print(f"| `{name}` | {seconds:.2f} s | {', '.join(map(str, results['exit_codes'][name]))} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
