"""`make bench-train`: `orderpipe train classification` of this checkout against a baseline
revision, on the same raw file, whole processes side by side (not a pytest test).

Each side runs its own `etl` on the raw file first (the table's format changed between them),
then the two trainings alternate, run after run. Printed per side: the wall time and the peak
memory of each run, their median and range, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak MiB) of one whole process."""
    began = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed in {cwd}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="05eccf9")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/orderpipe-bench-train"))
    args = parser.parse_args()

    work = args.workdir
    subprocess.run(["rm", "-rf", str(work)], check=True)
    baseline = work / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--force", "--detach", str(baseline),
         args.baseline],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    python = sys.executable
    env = {**os.environ, "ORDERPIPE_ECO_ENABLED": "false"}
    sides = {
        "this checkout": (work / "new", {**env, "PYTHONPATH": str(REPO / "src")}),
        f"baseline {args.baseline}": (work / "old", {**env, "PYTHONPATH": str(baseline / "src")}),
    }
    try:
        raw = work / "new" / "data" / "raw"
        raw.mkdir(parents=True)
        generate = ["generate", "--events", str(args.events), "--seed", str(args.seed)]
        run([python, "-m", "orderpipe", *generate], work / "new", sides["this checkout"][1])
        for folder, side_env in sides.values():
            (folder / "data" / "raw").mkdir(parents=True, exist_ok=True)
            if folder != work / "new":
                for file in raw.iterdir():
                    (folder / "data" / "raw" / file.name).write_bytes(file.read_bytes())
            run([python, "-m", "orderpipe", "etl"], folder, side_env)
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        train = [python, "-m", "orderpipe", "train", "classification"]
        run(train, *sides["this checkout"])  # warm-up: the page cache, not counted
        for _ in range(args.runs):
            for name, (folder, side_env) in sides.items():
                figures[name].append(run(train, folder, side_env))
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)],
            check=False,
        )
    medians = {}
    print(f"train classification, {args.events:,} events, {args.runs} runs each, alternated")
    for name, runs in figures.items():
        walls, peaks = [w for w, _ in runs], [p for _, p in runs]
        medians[name] = statistics.median(walls)
        print(
            f"  {name:>22}: wall {medians[name]:.2f} s ({min(walls):.2f}-{max(walls):.2f}), "
            f"peak {statistics.median(peaks):.0f} MiB ({min(peaks):.0f}-{max(peaks):.0f})"
        )
    new, old = medians.values()
    print(f"  baseline / this checkout: {old / new:.2f}x")


if __name__ == "__main__":
    main()
