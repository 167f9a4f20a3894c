"""Mutation testing of the core with mutmut, outside CI; prints the score and every survivor.

    python tools/mutation.py                                   # every mutant of the core (hours)
    python tools/mutation.py --sample 300 --seed 17 bot/jobs/*.py cogs/common/delivery.py   # a fixed sample

What is mutated and which tests run is configured under [tool.mutmut] in pyproject.toml.
Survivors are reviewed in tests/mutation-survivors.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KILLED = {1, 3}
TIMEOUT = {36, -24, 24, 152, 255}
NO_TESTS = {5, 33}


def mutant_names(modules: list[str]) -> list[str]:
    """Every mutant mutmut makes of `modules`, named as `mutmut run` takes them."""
    # mutmut's own generator, so the names match what `mutmut run` will create.
    from mutmut.mutation.file_mutation import mutate_file_contents
    from mutmut.utils.format_utils import get_mutant_name

    names: list[str] = []
    for module in modules:
        path = Path(module)
        mutated = mutate_file_contents(str(path), (ROOT / path).read_text("utf-8"))
        names += [get_mutant_name(path, name) for name in mutated.mutant_names]
    return sorted(names)


def exit_codes(names: list[str] | None) -> dict[str, int | None]:
    """The last result mutmut recorded for each mutant (all of them when `names` is None)."""
    codes: dict[str, int | None] = {}
    for meta in (ROOT / "mutants").rglob("*.py.meta"):
        codes.update(json.loads(meta.read_text("utf-8"))["exit_code_by_key"])
    return codes if names is None else {name: codes.get(name) for name in names}


def summary(codes: dict[str, int | None]) -> dict[str, object]:
    tally = Counter(
        "killed"
        if code in KILLED
        else "timeout"
        if code in TIMEOUT
        else "no tests"
        if code in NO_TESTS
        else "survived"
        if code == 0
        else "not checked"
        if code is None
        else "other"
        for code in codes.values()
    )
    # A timeout is a mutant the tests stopped (it hung); "no tests" is one no test reaches.
    caught = tally["killed"] + tally["timeout"]
    judged = caught + tally["survived"] + tally["no tests"]
    return {
        "mutants": len(codes),
        **dict(sorted(tally.items())),
        "score": round(caught / judged, 4) if judged else None,
        "survivors": sorted(n for n, c in codes.items() if c == 0 or c in NO_TESTS),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="sample from these files (default: the core)")
    parser.add_argument("--sample", type=int, help="test this many mutants, chosen by --seed")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--children", type=int, default=2, help="parallel test processes")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    names: list[str] | None = None
    if args.sample or args.modules:
        if not args.modules:
            parser.error("--sample needs the files to sample from")
        population = mutant_names(args.modules)
        count = min(args.sample or len(population), len(population))
        names = sorted(random.Random(args.seed).sample(population, count))
        print(f"{len(names)} of {len(population)} mutants of {', '.join(args.modules)}")
    started = time.monotonic()
    command = ["mutmut", "run", "--max-children", str(args.children), *(names or [])]
    # Seven other people may share the machine: mutation runs yield to everything else.
    run = subprocess.run(["nice", "-n", "19", sys.executable, "-m", "mutmut", *command[1:]])
    elapsed = time.monotonic() - started
    result = summary(exit_codes(names))
    result["wall_seconds"] = round(elapsed)
    for name in result["survivors"]:  # type: ignore[union-attr]
        print("survived:", name)
    print(json.dumps({k: v for k, v in result.items() if k != "survivors"}))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
