"""Mutation testing of the modules where a silent bug costs most, one group at a time.

Each group names the modules mutmut mutates and the test files that guard them. A group runs
in its own copy of the checkout (``build/mutation/GROUP``), so groups can run one after the
other or on different machines (a sharded run), and the default ``pytest`` run never sees
mutmut. mutmut records which tests reach each mutated function and runs only those tests
for each mutant.

Usage::

    python tools/mutation.py --list
    python tools/mutation.py --fresh checkpoint cache   # run two groups from scratch
    python tools/mutation.py --fresh all                # every group, one after the other
    python tools/mutation.py checkpoint --mutants 'panns_infer.checkpoint.x__read*'   # retest some
    python tools/mutation.py --report all         # scores and survivors of finished runs

Tests marked ``slow`` (the heaviest architectures, hour-long streams) are left out: a mutant
that survives runs every selected test that reaches it, and with them one mutant of the
windows group took minutes. They still run in the default suite.

A run stopped while mutmut collects which tests reach which function ("Running stats") leaves
that map incomplete, and later runs of the group then find "no tests" for many mutants and
let others survive that the full selection kills: rerun such a group with ``--fresh``.

Needs mutmut (in the ``test`` extra) and the fixtures folder (``../shared/fixtures`` beside
the checkout, or ``PANNS_INFER_FIXTURES``). Survivors are written to
``build/mutation/GROUP/survivors.txt`` with their diffs; the accepted ones are explained in
``tests/mutation_survivors.md``.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutation"

# group -> (modules mutated, test files run against them, the functions in scope: mutmut
# mutant-name patterns, "*" for every function of the modules). Methods are named
# module.xǁClassǁmethod by mutmut.
GROUPS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "checkpoint": (  # checkpoint loading and its unpickling allowlist
        ["panns_infer/checkpoint.py"],
        ["tests/test_checkpoint.py", "tests/test_checkpoint_messages.py", "tests/test_hostile.py",
         "tests/test_filenames.py"],
        ["*"],
    ),
    "cache": (  # download and cache verification
        ["panns_infer/hub.py", "panns_infer/transport.py"],
        ["tests/test_hub.py"],
        ["panns_infer.transport.*", "panns_infer.hub.x_download_*", "panns_infer.hub.x__cached_url_file_*",
         "panns_infer.hub.x_resolve_checkpoint_*", "panns_infer.hub.x_checkpoint_path_*",
         "panns_infer.hub.x__aside_path_*", "panns_infer.hub.x_is_offline_*"],
    ),
    "corpus": (  # corpus records and resume
        ["panns_infer/corpus/records.py", "panns_infer/corpus/header.py"],
        ["tests/test_corpus.py"],
        ["*"],
    ),
    "cli": (  # exit codes and what a failed file leaves behind
        ["panns_infer/cli/__init__.py", "panns_infer/cli/tagging.py", "panns_infer/cli/events.py",
         "panns_infer/cli/common.py"],
        ["tests/test_exit_codes.py", "tests/test_cli.py", "tests/test_cli_outputs.py", "tests/test_corpus.py"],
        ["panns_infer.cli.x__run_*", "panns_infer.cli.x_main_*", "panns_infer.cli.x__reader_gone_*",
         "panns_infer.cli.tagging.x_tag_files_*", "panns_infer.cli.tagging.x_resume_*",
         "panns_infer.cli.events.*", "panns_infer.cli.common.x_report_failure_*"],
    ),
    "audio": (  # audio input checks
        ["panns_infer/audio.py"],
        ["tests/test_audio.py"],
        ["*"],
    ),
    "events": (
        ["panns_infer/events.py"],
        ["tests/test_events.py"],
        ["*"],
    ),
    "windows": (  # windows, exact chunks and stitching
        ["panns_infer/windows.py", "panns_infer/chunks.py"],
        ["tests/test_windows.py", "tests/test_chunks.py", "tests/test_aggregation.py"],
        ["panns_infer.windows.x_plan_windows_*", "panns_infer.windows.x_grid_spans_*",
         "panns_infer.windows.x_stitch_segments_*", "panns_infer.chunks.*"],
    ),
    "fast": (  # the fast path's choice of method per layer, and which models it takes
        ["panns_infer/fast.py"],
        ["tests/test_fast.py"],
        ["panns_infer.fast.x_supports_*", "panns_infer.fast.x_choose_method_*",
         "panns_infer.fast.xǁFastConvǁ__init__*", "panns_infer.fast.xǁFastCnnǁ__init__*",
         "panns_infer.fast.x_optimize_*"],
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


def checkpoint_store() -> Path:
    """Where the test sessions share built fixture checkpoints: one folder per version of the
    fixtures' builder and specs, so a changed spec never reuses an old file."""
    folder = fixtures_folder()
    digest = hashlib.sha256()
    for path in sorted([folder / "make_checkpoint.py", *(folder / "specs").rglob("*")]):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return WORK / "checkpoints" / digest.hexdigest()[:16]


def prepare(group: str, *, fresh: bool) -> Path:
    """A copy of the tracked tree with this group's [tool.mutmut] section.

    mutmut's results in ``mutants/`` are kept unless ``fresh``: it retests what changed.
    """
    modules, tests, _ = GROUPS[group]
    work = WORK / group
    if fresh and work.exists():
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
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-m", "not slow", "-o", "addopts=",
                       "-o", "tmp_path_retention_policy=none"]
process_isolation = "forkserver"
use_git_change_detection = false
timeout_multiplier = 4.0
"""
    with open(work / "pyproject.toml", "a", encoding="utf-8") as handle:
        handle.write(section)
    return work


def run(group: str, children: int, *, fresh: bool, mutants: list[str]) -> None:
    work = prepare(group, fresh=fresh)
    env = dict(os.environ, PANNS_INFER_FIXTURES=str(fixtures_folder()), OMP_NUM_THREADS="1",
               PANNS_INFER_TEST_CHECKPOINTS=str(checkpoint_store()),
               MKL_NUM_THREADS="1", PYTHONPATH="")
    # mutmut ends each test session with os._exit, so pytest never removes its temporary
    # folders (fixture checkpoints of hundreds of MB each): each session gets its own, and
    # those of ended sessions are swept.
    temp = work / "sessions"
    temp.mkdir(exist_ok=True)
    env["PANNS_INFER_TEST_SESSIONS"] = str(temp)
    done = threading.Event()
    sweeper = threading.Thread(target=_sweep, args=(temp, done), daemon=True)
    sweeper.start()
    print(f"== {group}: mutating {', '.join(GROUPS[group][0])}", flush=True)
    scope = mutants or ([] if GROUPS[group][2] == ["*"] else GROUPS[group][2])
    try:
        subprocess.run(["mutmut", "run", "--max-children", str(children), *scope], cwd=work, env=env, check=False)
    finally:
        done.set()
        sweeper.join()
        shutil.rmtree(temp, ignore_errors=True)


def _sweep(temp: Path, done: threading.Event) -> None:
    """Every 10 s until ``done``, remove the folders ``session-PID`` under ``temp`` of test
    sessions that have ended (tests/conftest.py names them so)."""
    while not done.wait(10.0):
        for folder in temp.glob("session-*"):
            try:
                os.kill(int(folder.name.split("-", 1)[1]), 0)
            except ProcessLookupError:
                shutil.rmtree(folder, ignore_errors=True)
            except (OSError, ValueError):
                continue


def results(group: str) -> dict[str, str]:
    """mutant name -> status of the group's mutants in scope, read from mutmut's records."""
    modules, _, scope = GROUPS[group]
    found: dict[str, str] = {}
    for module in modules:
        meta = WORK / group / "mutants" / (module + ".meta")
        if meta.is_file():
            for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
                if any(fnmatch.fnmatchcase(name, pattern) for pattern in scope):
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
    parser.add_argument("--fresh", action="store_true", help="discard earlier results of these groups")
    parser.add_argument("--mutants", nargs="+", default=[], metavar="NAME",
                        help="(re)test only these mutants (mutmut names, * wildcards), e.g. after adding tests")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2, help="mutants run at once")
    args = parser.parse_args()
    if args.list or not args.groups:
        for name, (modules, tests, scope) in GROUPS.items():
            print(f"{name:11} {' '.join(modules)}\n{'':11} scope: {' '.join(scope)}\n{'':11} tests: {' '.join(tests)}")
        return
    groups = list(GROUPS) if args.groups == ["all"] else args.groups
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    totals = [0, 0]
    for group in groups:
        if not args.report:
            run(group, args.children, fresh=args.fresh, mutants=args.mutants)
        caught, tested = report(group)
        totals[0] += caught
        totals[1] += tested
    if len(groups) > 1 and totals[1]:
        print(f"total: {totals[0]}/{totals[1]} caught ({100 * totals[0] / totals[1]:.1f}%)")


if __name__ == "__main__":
    main()
