"""Mutation checks: break an implementation on purpose and check that the tests notice.

Each mutation (see ``tests/mutations.py``) runs the tests that guard it with ``INTERP_STEER_MUTATION`` set;
the mutation is *caught* when that run fails. Exit status 1 when a mutation survives.

    python scripts/mutation_check.py                 # the fast mutations (b)-(d)
    python scripts/mutation_check.py --slow          # also (a): random vectors against the real-model effect tests
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {  # mutation -> the tests that must fail
    "sas-reversed": ["tests/test_caa_sas.py"],
    "sas-policy": ["tests/test_caa_sas.py"],
    "ignore-checkpoint": ["tests/test_preference.py", "-k", "resume"],
    "random-sae": ["tests/test_saes.py", "-m", "not slow"],
}
SLOW = {"random-vector": ["tests/test_behaviour_real.py"]}


def run(mutation: str, selection: list[str]) -> dict:
    env = {**os.environ, "INTERP_STEER_MUTATION": mutation, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.mutations",
                           *selection], cwd=ROOT, env=env, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    failed = [line.split(" ")[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
    return {"mutation": mutation, "tests": " ".join(selection), "caught": proc.returncode != 0,
            "failing_tests": failed, "summary": tail, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slow", action="store_true", help="also the random-vector mutation on the real-model tests")
    p.add_argument("--only", nargs="+", default=None, help="these mutations only")
    p.add_argument("--output", default=str(ROOT / "results" / "mutations.json"))
    args = p.parse_args()
    checks = {**CHECKS, **(SLOW if args.slow else {})}
    if args.only:
        checks = {k: v for k, v in {**CHECKS, **SLOW}.items() if k in args.only}
    rows = []
    for mutation, selection in checks.items():
        row = run(mutation, selection)
        rows.append(row)
        print(f"{mutation:18s} {'caught' if row['caught'] else 'SURVIVED':8s} {row['summary']}  "
              f"({row['seconds']} s)", flush=True)
        for t in row["failing_tests"]:
            print(f"    fails: {t}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["caught"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
