"""``panns-tag --events`` and ``--plot``: sound events and plots, file by file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..errors import PannsError, UnsupportedOperationError
from .common import EXIT_OK, EXIT_SOME_FAILED, ProgressLine, report_failure
from .tagging import resume

if TYPE_CHECKING:
    from ..tagger import AudioTagger

__all__ = ["events_to_stdout", "events_to_file"]


def events_to_stdout(tagger: "AudioTagger", files: list[str], args: argparse.Namespace) -> int:
    bar = ProgressLine(enabled=not args.no_progress and sys.stderr.isatty())
    failed = 0
    if args.format == "tsv":
        print("filename\tonset\toffset\tevent_label", flush=True)
    for path in files:
        try:
            _one_file(tagger, path, args, bar.for_file(path), len(files))
        except PannsError as exc:
            failed += 1
            bar.clear()
            if args.format == "json":
                print(json.dumps({"source": path, "error": str(exc)}), flush=True)
            report_failure(path, str(exc), exc, args)
        bar.clear()
    if failed:
        print(f"panns-tag: {failed} of {len(files)} file(s) failed", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def events_to_file(tagger: "AudioTagger", files: list[str], args: argparse.Namespace, out_format: str) -> int:
    """Events of each file as JSONL records, or a DCASE TSV written at the end; resumable."""
    from ..corpus import EventsTsv, FileResult, Progress, RecordFile, file_stat
    from ..audio import probe_file

    records = (EventsTsv(args.output, overwrite=args.overwrite) if out_format == "tsv"
               else RecordFile(args.output, format="jsonl", top_k=0, overwrite=args.overwrite))
    failed = 0
    try:
        todo = resume(files, records, None)
        bar = Progress(len(todo), enabled=not args.no_progress and sys.stderr.isatty())
        for path in todo:
            size, mtime = file_stat(path)
            res = FileResult(path, size=size, mtime=mtime)
            try:
                frames, rate = probe_file(path)
                result = _detect(tagger, path, args)
                res.duration, res.sample_rate = frames / rate, rate
                res.events = [e.to_dict() for e in result.events(**_event_options(args), duration=res.duration)]
            except PannsError as exc:
                res.error = str(exc)
                failed += 1
                bar.clear()
                report_failure(path, res.error, exc, args)
            records.append([res])
            bar.update([res])
        bar.clear()
    finally:
        records.close()
    if isinstance(records, EventsTsv):
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


def _event_options(args: argparse.Namespace) -> dict:
    return {"threshold": args.threshold, "offset_threshold": args.offset_threshold,
            "min_duration": args.min_duration, "min_gap": args.min_gap, "median_filter": args.median_filter}


def _one_file(tagger: "AudioTagger", path: str, args: argparse.Namespace,
              callback: Optional[Callable[[float, float], None]], count: int) -> None:
    result = _detect(tagger, path, args, callback)
    if args.plot:
        if args.segment is not None:
            raise UnsupportedOperationError("--plot draws framewise output; drop --segment")
        logmel = tagger.log_mel(path) if result.num_frames <= 60_000 else None  # up to 10 minutes
        result.plot(_plot_path(args.plot, path, count), top_k=args.top_k,
                    logmel=None if logmel is None else logmel[: result.num_frames])
    if not args.events:
        return
    from ..audio import probe_file

    frames, rate = probe_file(path)
    events = result.events(**_event_options(args), duration=frames / rate)  # never past the file's end
    name = os.path.basename(path)
    if args.format == "tsv":
        for e in events:
            print(f"{name}\t{e.onset:.3f}\t{e.offset:.3f}\t{e.label}")
    elif args.format == "json":
        print(json.dumps({"source": path, "events": [e.to_dict() for e in events]}))
    else:
        print(f"{path}:")
        for e in events:
            print(f"  {e.onset:8.2f} {e.offset:8.2f}  {e.score:.3f}  {e.label}")
    sys.stdout.flush()


def _plot_path(template: str, source: str, count: int) -> str:
    if count == 1:
        return template
    stem, ext = os.path.splitext(template)
    return f"{stem}_{os.path.splitext(os.path.basename(source))[0]}{ext or '.png'}"


