"""Mutation testing of the modules where a silent bug costs most, one group at a time.

Each group names the modules mutmut mutates and the test files that guard them. A group runs
in its own copy of the checkout (``build/mutation/GROUP``), so groups can run one after the
other or on different machines (a sharded run), and the default ``pytest`` run never sees
mutmut. mutmut records which tests reach each mutated function and runs only those tests
for each mutant.

Usage::

    python tools/mutation.py --list
    python tools/mutation.py checkpoint cache     # run two groups
    python tools/mutation.py all                  # every group, one after the other
    python tools/mutation.py --report all         # scores and survivors of finished runs

Needs mutmut (in the ``test`` extra) and the fixtures folder (``../shared/fixtures`` beside
the checkout, or ``PANNS_INFER_FIXTURES``). Survivors are written to
``build/mutation/GROUP/survivors.txt`` with their diffs; the accepted ones are explained in
``tests/mutation_survivors.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutation"

# group -> (modules mutated, test files run against them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "checkpoint": (
        ["panns_infer/checkpoint.py"],
        ["tests/test_checkpoint.py", "tests/test_hostile.py"],
    ),
    "cache": (
        ["panns_infer/hub.py", "panns_infer/transport.py"],
        ["tests/test_hub.py"],
    ),
    "corpus": (
        ["panns_infer/corpus/records.py", "panns_infer/corpus/header.py"],
        ["tests/test_corpus.py"],
    ),
    "cli": (
        ["panns_infer/cli/__init__.py", "panns_infer/cli/tagging.py", "panns_infer/cli/events.py",
         "panns_infer/cli/outputs.py", "panns_infer/cli/common.py"],
        ["tests/test_exit_codes.py", "tests/test_cli.py", "tests/test_cli_outputs.py"],
    ),
    "audio": (
        ["panns_infer/audio.py"],
        ["tests/test_audio.py"],
    ),
    "events": (
        ["panns_infer/events.py"],
        ["tests/test_events.py"],
    ),
    "windows": (
        ["panns_infer/windows.py", "panns_infer/chunks.py"],
        ["tests/test_windows.py", "tests/test_chunks.py", "tests/test_aggregation.py"],
    ),
    "fast": (
        ["panns_infer/fast.py"],
        ["tests/test_fast.py"],
    ),
}

# mutmut's exit codes, as mutmut.stats names them
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
          37: "caught by type check", -9: "segfault", -11: "segfault", None: "not checked"}
CAUGHT = {"killed", "timeout", "caught by type check", "segfault"}


def fixtures_folder() -> Path:
    folder = Path(os.environ.get("PANNS_INFER_FIXTURES") or ROOT.parent / "shared" / "fixtures")
    if not (folder / "make_checkpoint.py").is_file():
        sys.exit(f"fixtures not found at {folder}: check out ../shared beside the repository "
                 "or set PANNS_INFER_FIXTURES")
    return folder.resolve()


def prepare(group: str) -> Path:
    """A fresh copy of the tracked tree with this group's [tool.mutmut] section."""
    modules, tests = GROUPS[group]
    work = WORK / group
    if work.exists():
        shutil.rmtree(work)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in files:
        source = ROOT / name
        if source.is_file() and not name.startswith("build/"):
            target = work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)

    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(item) for item in items) + "]"

    section = f"""
[tool.mutmut]
source_paths = ["panns_infer"]
only_mutate = {toml_list(modules)}
pytest_add_cli_args_test_selection = {toml_list(tests)}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-o", "addopts="]
process_isolation = "forkserver"
use_git_change_detection = false
"""
    with open(work / "pyproject.toml", "a", encoding="utf-8") as handle:
        handle.write(section)
    return work


def run(group: str, children: int) -> None:
    work = prepare(group)
    env = dict(os.environ, PANNS_INFER_FIXTURES=str(fixtures_folder()), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONPATH="")
    print(f"== {group}: mutating {', '.join(GROUPS[group][0])}", flush=True)
    subprocess.run(["mutmut", "run", "--max-children", str(children)], cwd=work, env=env, check=False)


def results(group: str) -> dict[str, str]:
    """mutant name -> status, read from mutmut's per-module records."""
    found: dict[str, str] = {}
    for module in GROUPS[group][0]:
        meta = WORK / group / "mutants" / (module + ".meta")
        if meta.is_file():
            for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
                found[name] = STATUS.get(code, "suspicious")
    return found


def report(group: str) -> tuple[int, int]:
    found = results(group)
    if not found:
        print(f"{group}: no results (run it first)")
        return 0, 0
    counts = Counter(found.values())
    tested = len(found) - counts["skipped"]
    caught = sum(counts[s] for s in CAUGHT)
    survivors = sorted(name for name, status in found.items() if status not in CAUGHT | {"skipped"})
    work = WORK / group
    with open(work / "survivors.txt", "w", encoding="utf-8") as handle:
        for name in survivors:
            diff = subprocess.run(["mutmut", "show", name], cwd=work, capture_output=True, text=True,
                                  env=dict(os.environ, PYTHONPATH="")).stdout
            handle.write(f"{diff}\n")
    detail = ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
    print(f"{group}: {caught}/{tested} caught ({100 * caught / max(tested, 1):.1f}%): {detail}; "
          f"survivors in {work / 'survivors.txt'}")
    return caught, tested


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="*", help=f"groups to run: {', '.join(GROUPS)} or all")
    parser.add_argument("--list", action="store_true", help="show the groups and exit")
    parser.add_argument("--report", action="store_true", help="summarise finished runs only")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2, help="mutants run at once")
    args = parser.parse_args()
    if args.list or not args.groups:
        for name, (modules, tests) in GROUPS.items():
            print(f"{name:11} {' '.join(modules)}\n{'':11} tests: {' '.join(tests)}")
        return
    groups = list(GROUPS) if args.groups == ["all"] else args.groups
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    totals = [0, 0]
    for group in groups:
        if not args.report:
            run(group, args.children)
        caught, tested = report(group)
        totals[0] += caught
        totals[1] += tested
    if len(groups) > 1 and totals[1]:
        print(f"total: {totals[0]}/{totals[1]} caught ({100 * totals[0] / totals[1]:.1f}%)")


if __name__ == "__main__":
    main()
