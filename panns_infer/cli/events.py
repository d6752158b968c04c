"""``panns-tag --events`` and ``--plot``: sound events and plots, file by file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..errors import InvalidArgumentError, PannsError
from .common import EXIT_OK, EXIT_SOME_FAILED, ProgressLine, report_failure
from .tagging import resume

if TYPE_CHECKING:
    from ..tagger import AudioTagger

__all__ = ["events_to_stdout", "events_to_file", "plot_paths"]


def events_to_stdout(tagger: "AudioTagger", files: list[str], args: argparse.Namespace) -> int:
    """Events (and plots) of each file on stdout: text, JSON Lines or a DCASE TSV.

    The TSV's ``filename`` column holds each path as it was given; a path with a tab or a
    line break cannot be a TSV field, so that file fails (exit 1) and the others go on.
    """
    from ..corpus import tsv_name_problem
    from .outputs import model_name

    bar = ProgressLine(enabled=not args.no_progress and sys.stderr.isatty())
    model = model_name(tagger, args.checkpoint)
    plots = plot_paths(args.plot, files) if args.plot else {}
    failed = 0
    if args.events and args.format == "tsv":
        print("filename\tonset\toffset\tevent_label", flush=True)
    for path in files:
        try:
            if args.events and args.format == "tsv" and tsv_name_problem(path):
                raise InvalidArgumentError(tsv_name_problem(path))
            _one_file(tagger, path, args, bar, plots.get(path), model)
        except (PannsError, OSError) as exc:
            failed += 1
            bar.clear()
            if args.events and args.format == "json":
                print(json.dumps({"path": path, "duration": None, "sample_rate": None, "model": model,
                                  "error": str(exc)}), flush=True)
            report_failure(path, str(exc), exc, args)
        bar.clear()
    if failed:
        print(f"panns-tag: {failed} of {len(files)} file(s) failed", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def events_to_file(tagger: "AudioTagger", files: list[str], args: argparse.Namespace, out_format: str) -> int:
    """Events of each file as JSONL records, or a DCASE TSV written at the end; resumable."""
    from ..audio import probe_file
    from ..corpus import EventsTsv, FileResult, Progress, RecordFile, file_stat, tsv_name_problem
    from .outputs import resolved, run_header

    header = run_header(tagger, args, "events")
    records = (EventsTsv(args.output, header=header, overwrite=args.overwrite) if out_format == "tsv"
               else RecordFile(args.output, header=header, format="jsonl", top_k=0, overwrite=args.overwrite))
    failed = 0
    try:
        todo = resume(resolved(files), records, None)
        bar = Progress(len(todo), enabled=not args.no_progress and sys.stderr.isatty())
        for path in todo:
            size, mtime = file_stat(path)
            res = FileResult(path, size=size, mtime=mtime)
            try:
                if out_format == "tsv" and tsv_name_problem(path):
                    raise InvalidArgumentError(tsv_name_problem(path))
                frames, rate = probe_file(path)
                res.duration, res.sample_rate = frames / rate, rate
                # the progress callback only runs inside this call
                result = _detect(tagger, path, args, lambda done, total: bar.within(path, done, total))  # noqa: B023
                res.events = [e.to_dict() for e in result.events(**_event_options(args, res.duration))]
            except PannsError as exc:
                res.error = str(exc)
                res.duration = res.sample_rate = None
                failed += 1
                bar.clear()
                report_failure(path, res.error, exc, args)
            if not (out_format == "tsv" and tsv_name_problem(path)):  # such a name has no TSV record
                records.append([res])
            bar.update([res])
        bar.clear()
    finally:
        records.close()
    if isinstance(records, EventsTsv):  # only after every file: an exception skips it
        records.finalize()
    if failed:
        print(f"panns-tag: {failed} of {len(todo)} file(s) failed", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def _detect(tagger: "AudioTagger", path: str, args: argparse.Namespace,
            callback: Optional[Callable[[float, float], None]] = None) -> Any:
    if args.segment is not None:
        return tagger.timeline(path, segment=args.segment, hop=args.hop or args.segment / 2, callback=callback)
    return tagger.framewise(path, callback=callback)


def _event_options(args: argparse.Namespace, duration: Optional[float]) -> dict:
    return {"threshold": args.threshold, "offset_threshold": args.offset_threshold,
            "min_duration": args.min_duration, "min_gap": args.min_gap, "median_filter": args.median_filter,
            "duration": duration}


def _one_file(tagger: "AudioTagger", path: str, args: argparse.Namespace, bar: ProgressLine,
              plot: Optional[str], model: str) -> None:
    from ..audio import probe_file

    frames, rate = probe_file(path)
    duration = frames / rate
    result = _detect(tagger, path, args, bar.for_file(path))
    if plot is not None:
        logmel = tagger.log_mel(path) if result.num_frames <= 60_000 else None  # up to 10 minutes
        result.plot(plot, top_k=args.top_k, logmel=None if logmel is None else logmel[: result.num_frames])
    if not args.events:
        return
    events = result.events(**_event_options(args, duration))
    bar.clear()  # the progress line must not run into the results
    if args.format == "tsv":
        for e in events:
            print(f"{path}\t{e.onset:.3f}\t{e.offset:.3f}\t{e.label}")
    elif args.format == "json":
        print(json.dumps({"path": path, "duration": duration, "sample_rate": rate, "model": model,
                          "events": [e.to_dict() for e in events]}))
    else:
        print(f"{path}:")
        for e in events:
            print(f"  {e.onset:8.2f} {e.offset:8.2f}  {e.score:.3f}  {e.label}")
    sys.stdout.flush()


def plot_paths(template: str, files: list[str]) -> dict[str, str]:
    """The image each file's plot goes to: ``template`` for one file; for several, the
    template's stem, the file's 1-based position and its base name (``out_002_clip.png``),
    so two files with one base name (``d1/clip.wav``, ``d2/clip.wav``) never share an image.

    >>> plot_paths("out.png", ["d1/a.wav", "d2/a.wav"])
    {'d1/a.wav': 'out_1_a.png', 'd2/a.wav': 'out_2_a.png'}
    """
    if len(files) == 1:
        return {files[0]: template}
    stem, ext = os.path.splitext(template)
    width = len(str(len(files)))
    out = {}
    for i, source in enumerate(files, 1):
        name = os.path.splitext(os.path.basename(source))[0]
        name = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in name)
        out[source] = f"{stem}_{i:0{width}d}_{name}{ext or '.png'}"
    return out
