"""The default job on several seeds: does the first run hold up on any machine?

A new user's first command runs ``sdsearch run spaces/iot_budget.yaml``. Floating-point differences
between CPUs move a search as much as a seed does, so each seed here (``sdsearch run --seed S``) stands
in for another machine. Per seed, in a fresh process as a user types it, on a fresh study: the job's
wall time, then its trial front: how many points, the span of every cost objective (max / min on the
front), the best validation accuracy, and the knee (or why there is none). The goal of a default job
that holds: at least ``MIN_POINTS`` points spanning at least ``MIN_SPAN``x in a cost, best accuracy
at least ``MIN_ACCURACY``, within ``MAX_SECONDS`` of job time on 2 cores. The last line gives the worst
seed and the range, the figures the README quotes.

Run:  .venv/bin/python bench/default_job.py [--seeds 0 1 2] [--space spaces/iot_budget.yaml] [--check]
      .venv/bin/python bench/default_job.py --smoke
``--check`` exits 1 when a seed misses the front size or the accuracy (what CI runs on one seed).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "spaces" / "iot_budget.yaml"
MIN_POINTS, MIN_SPAN, MIN_ACCURACY, MAX_SECONDS = 4, 2.0, 0.97, 240.0


def run_job(space: Path, seed: int, folder: Path) -> tuple[float, str]:
    """``sdsearch run SPACE --seed S`` into its own study file; (wall seconds, study storage)."""
    db = folder / f"seed{seed}.db"
    cmd = [sys.executable, "-m", "sdsearch", "run", str(space), "--seed", str(seed), "--storage", str(db)]
    started = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"}
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(
            f"seed {seed}: sdsearch run failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return seconds, str(db)


def front_figures(storage: str) -> dict[str, Any]:
    """Size, spans, best accuracy and knee of the study's trial front."""
    from sdsearch.core.metrics import METRICS
    from sdsearch.results.read import load_front

    front = load_front(storage)
    costs = [m for m in front.objectives if METRICS.get(m).direction == "minimize"]
    spans = {}
    for m in costs:
        values = [c.value(m) for c in front.front if c.value(m) > 0]
        spans[m] = max(values) / min(values) if values else math.nan
    knee = front.knee
    return {
        "points": len(front.front),
        "spans": spans,
        "best": max(c.accuracy for c in front.front),
        "knee": f"#{knee.trial} {100 * knee.accuracy:.2f}%" if front.knee_note is None else "none",
        "trained": front.counts.complete,
    }


def smoke_space(folder: Path) -> Path:
    """The default space cut to seconds: 3 trials of 2 epochs."""
    doc = yaml.safe_load(SPACE.read_text())
    doc.update(trials=3)
    doc["train"] = {**doc["train"], "epochs": 2}
    path = folder / "smoke.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--space", type=Path, default=SPACE)
    p.add_argument(
        "--check", action="store_true", help="exit 1 when a seed misses the front size or accuracy"
    )
    p.add_argument("--smoke", action="store_true", help="one seed of a 3-trial, 2-epoch cut (what CI runs)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        space = smoke_space(folder) if args.smoke else args.space
        seeds = args.seeds[:1] if args.smoke else args.seeds
        print(
            f"{space.name} on seeds {seeds}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}", flush=True
        )
        rows = []
        for seed in seeds:
            seconds, storage = run_job(space, seed, folder)
            rows.append({"seed": seed, "seconds": seconds, **front_figures(storage)})
            r = rows[-1]
            spans = ", ".join(f"{m} {v:.1f}x" for m, v in r["spans"].items())
            ok = (r["points"] >= MIN_POINTS and max(r["spans"].values(), default=0) >= MIN_SPAN
                  and r["best"] >= MIN_ACCURACY and seconds <= MAX_SECONDS)  # fmt: skip
            print(f"  seed {seed}: {seconds:6.0f} s  front {r['points']} points  spans {spans}  best "
                  f"{100 * r['best']:.2f}%  knee {r['knee']}  {r['trained']} trained  {'ok' if ok else 'MISSES THE GOAL'}",
                  flush=True)  # fmt: skip
    worst = min(rows, key=lambda r: (r["points"], r["best"]))
    print(f"worst seed {worst['seed']}: {worst['points']} points, best {100 * worst['best']:.2f}%; range: "
          f"{min(r['points'] for r in rows)}-{max(r['points'] for r in rows)} points, best "
          f"{100 * min(r['best'] for r in rows):.2f}-{100 * max(r['best'] for r in rows):.2f}%, "
          f"{min(r['seconds'] for r in rows):.0f}-{max(r['seconds'] for r in rows):.0f} s "
          f"(goal: >= {MIN_POINTS} points spanning >= {MIN_SPAN:g}x, best >= {100 * MIN_ACCURACY:g}%, "
          f"<= {MAX_SECONDS:.0f} s)")  # fmt: skip
    if args.check and any(r["points"] < MIN_POINTS or r["best"] < MIN_ACCURACY for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
