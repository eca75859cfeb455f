"""Simulator speed: time compression and seeds per second on a scenario.

Run:  .venv/bin/python bench/sim_speed.py [--scenario standard] [--seeds 20] [--profile]
                                          [--backend memory|fakeredis]

Prints the median time compression (virtual seconds / wall seconds) over the seeds, the wall time
per seed, the projected time of a 1,000-seed campaign on one core, and, with --profile, where the
time goes (cProfile, top functions by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

from corral.sim.campaign import run_seed
from corral.sim.scenario import SCENARIOS
from corral.sim.world import BACKENDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", default="standard", choices=sorted(SCENARIOS))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--backend", default="memory", choices=BACKENDS)
    args = parser.parse_args()
    scenario = SCENARIOS[args.scenario]
    compressions, walls, events = [], [], []
    started = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        result = run_seed(scenario, seed, backend=args.backend)
        compressions.append(result.virtual_seconds / result.wall_seconds)
        walls.append(result.wall_seconds)
        events.append(result.events)
    total = time.perf_counter() - started
    print(f"scenario {scenario.name} on {args.backend}: {args.seeds} seeds in {total:.1f} s")
    print(
        f"time compression: median {statistics.median(compressions):,.0f}x "
        f"(min {min(compressions):,.0f}x, max {max(compressions):,.0f}x)"
    )
    print(
        f"wall per seed: median {statistics.median(walls):.3f} s; events per seed: median "
        f"{statistics.median(events):,.0f}; "
        f"{statistics.median(events) / statistics.median(walls):,.0f} events/s"
    )
    print(f"projected 1,000-seed campaign: {1000 * total / args.seeds / 60:.1f} min on one core")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run_seed(scenario, args.first_seed, backend=args.backend)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
