"""Benchmarks: the bridge beside automerge-repo's sync server and the Automerge core floor.

    python -m bench --quick            # smoke run, about a minute
    python -m bench                    # the full run (about 10 minutes on 2 cores)
    python -m bench --json out.json    # also write every table as JSON
    python -m bench --only typing manydocs --profile prof/   # bridge under py-spy
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from . import catchup, cluster, durable, guard, limits, manydocs, profile, servers, throughput, typing_live, wire
from .machine import Load
from .report import Table, render, write_json

SCENARIOS = ["throughput", "durable", "catchup", "typing", "manydocs", "wire", "guard", "limits", "cluster"]


def _run(name: str, quick: bool, profile_dir: Path | None) -> Table:
    if name == "throughput":
        return throughput.run(quick)
    if name == "durable":
        return durable.run(quick)
    if name == "catchup":
        return catchup.run(quick)
    if name == "typing":
        return typing_live.run(quick, profile_dir=profile_dir)
    if name == "manydocs":
        return manydocs.run(quick, profile_dir=profile_dir)
    if name == "guard":
        return guard.run(quick)
    if name == "limits":
        return limits.run(quick)
    if name == "cluster":
        return cluster.run(quick)
    return wire.run(quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run, about a minute")
    parser.add_argument("--json", metavar="PATH", help="also write the tables as JSON")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, metavar="NAME",
                        help=f"run only these scenarios ({', '.join(SCENARIOS)})")
    parser.add_argument("--profile", metavar="DIR", type=Path,
                        help="run the bridge under py-spy in the typing and manydocs scenarios; profiles go to DIR")
    args = parser.parse_args(argv)
    if not servers.node_available():
        print("note: bench/node_modules is missing (run `npm ci` in bench/): reference rows are skipped\n", flush=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    tables: list[Table] = []
    started = time.monotonic()
    for name in args.only or SCENARIOS:
        with Load() as load:
            try:
                table = _run(name, args.quick, args.profile)
            except Exception as exc:  # one broken scenario must not lose the others
                traceback.print_exc()
                table = Table(name, "FAILED", ["error"], [[f"{type(exc).__name__}: {exc}"[:300]]])
        table.note(load.summary())
        table.machine = load.as_dict()
        tables.append(table)
        print(render(table), "", sep="\n", flush=True)
    if args.profile:
        typing_profiles = sorted(args.profile.glob("typing-*.pyspy.txt"), key=lambda p: int(p.name.split("-")[1].split(".")[0]))
        found = {f"typing N={p.name.split('-')[1].split('.')[0]}": p for p in typing_profiles}
        if (args.profile / "manydocs.pyspy.txt").exists():
            found["manydocs"] = args.profile / "manydocs.pyspy.txt"
        if found:
            tables.append(profile.table(found))
            print(render(tables[-1]), "", sep="\n")
    meta = {"quick": args.quick, "seconds": round(time.monotonic() - started, 1), "python": sys.version.split()[0],
            "machine": platform.platform(), "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "profiled": bool(args.profile)}
    print(f"total {meta['seconds']:.0f} s")
    if args.json:
        write_json(args.json, tables, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
