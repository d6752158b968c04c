"""``panns-tag``: tag audio files from the command line.

    panns-tag dog.flac --checkpoint Cnn14 --top-k 5
    panns-tag a.wav b.mp3 --checkpoint Cnn14_mAP=0.431.pth --format json
    panns-tag --list-models
    panns-tag --download Cnn14 Cnn14_DecisionLevelMax
    panns-tag street.flac --checkpoint Cnn14_DecisionLevelMax --events --format tsv --plot out.png
    panns-tag street.flac --checkpoint Wavegram_Logmel_Cnn14 --events --segment 2 --hop 1

Exit status: 0 when every file was tagged, 1 when some failed (each failure is reported on
stderr and the other files are still tagged), 2 for usage errors and setup failures (bad
checkpoint, labels, device). User errors never print a traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Optional, Sequence

from .errors import PannsError, UnsupportedOperationError

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``panns-tag``."""
    p = argparse.ArgumentParser(
        prog="panns-tag",
        description="Tag audio files with a PANNs checkpoint (AudioSet, 527 classes).",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="audio files (any format libsndfile reads)")
    p.add_argument("--checkpoint", "-c", default="Cnn14",
                   help="registry name (see --list-models), checkpoint file, or URL (default: Cnn14)")
    p.add_argument("--arch", help="architecture, to override detection from the checkpoint")
    p.add_argument("--labels", help="AudioSet-format label CSV (default: the cached AudioSet list)")
    p.add_argument("--top-k", "-k", type=int, default=10, help="labels to print per file (default: 10)")
    p.add_argument("--format", "-f", choices=["text", "json", "tsv"], default="text",
                   help="text (default), json (one JSON object per line), or tsv (DCASE events; with --events)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default: 8)")
    p.add_argument("--offline", action="store_true", help="never use the network (PANNS_INFER_OFFLINE=1)")
    p.add_argument("--no-progress", action="store_true", help="no download progress bars")
    p.add_argument("--list-models", action="store_true", help="list the released checkpoints and exit")
    p.add_argument("--download", nargs="+", metavar="NAME", help="download checkpoints into the cache and exit")
    p.add_argument("--window", type=float, default=10.0,
                   help="files longer than this many seconds run as overlapping windows (default: 10)")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sed = p.add_argument_group("sound event detection")
    sed.add_argument("--events", action="store_true",
                     help="print sound events instead of tags (decision-level checkpoints, or any with --segment)")
    sed.add_argument("--segment", type=float, help="tag consecutive segments of this many seconds (timeline)")
    sed.add_argument("--hop", type=float, help="seconds between timeline segments (default: segment / 2)")
    sed.add_argument("--threshold", type=float, default=0.5, help="event onset threshold (default: 0.5)")
    sed.add_argument("--offset-threshold", type=float, help="hysteresis: events last while p >= this")
    sed.add_argument("--min-duration", type=float, default=0.0, help="drop events shorter than this (s)")
    sed.add_argument("--min-gap", type=float, default=0.0, help="merge events closer than this (s)")
    sed.add_argument("--median-filter", type=float, help="median filter width in seconds")
    sed.add_argument("--plot", metavar="IMAGE",
                     help="save a plot of the top classes over time (needs panns-infer[plot]); with "
                          "several files, the file name is inserted before the extension")
    return p


def _list_models(fmt: str) -> int:
    from .catalog import list_models

    models = list_models()
    if fmt == "json":
        for m in models:
            print(json.dumps(m.to_dict()))
        return EXIT_OK
    print(f"{'name':<24} {'arch':<24} {'rate':>6} {'mAP':>6} {'emb':>5} {'sed':>4} {'min s':>6}  pinned")
    for m in models:
        emb = "-" if m.embedding_size is None else str(m.embedding_size)
        print(f"{m.name:<24} {m.arch:<24} {m.sample_rate:>6} {m.mAP:>6.3f} {emb:>5} "
              f"{'yes' if m.framewise else 'no':>4} {m.min_seconds:>6.2f}  {'yes' if m.pinned else 'no'}")
    return EXIT_OK


def _download(names: Sequence[str], offline: bool, progress: Optional[bool]) -> int:
    from .hub import download

    for name in names:
        path = download(name, offline=offline or None, progress=progress)
        print(path)
    return EXIT_OK


def _format_text(tags) -> str:
    lines = [f"{tags.source}:"]
    lines += [f"  {score:.3f}  {label}" for label, score in zip(tags.labels, tags.scores)]
    return "\n".join(lines)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    progress = False if args.no_progress else None
    if args.list_models:
        return _list_models(args.format)
    if args.download:
        return _download(args.download, args.offline, progress)
    if not args.files:
        parser.print_usage(sys.stderr)
        print("panns-tag: error: give at least one FILE (or --list-models / --download)", file=sys.stderr)
        return EXIT_USAGE
    if args.top_k < 0:
        parser.error("--top-k must be >= 0")

    from .tagger import AudioTagger

    if args.format == "tsv" and not args.events:
        parser.error("--format tsv writes events: add --events")
    tagger = AudioTagger(args.checkpoint, arch=args.arch, device=args.device, labels=args.labels,
                         batch_size=args.batch_size, offline=args.offline or None, progress=progress,
                         window=args.window if args.window and args.window > 0 else None)
    _ = tagger.labels  # fail early (exit 2) when the labels cannot be had
    if (args.events or args.plot) and not tagger.model.has_framewise and args.segment is None:
        raise UnsupportedOperationError(
            f"{tagger.arch} has no framewise output: use a sound event detection checkpoint "
            "(Cnn14_DecisionLevelMax, Cnn14_DecisionLevelAtt) or add --segment SECONDS for a timeline")
    bar = _ProgressLine(enabled=not args.no_progress and sys.stderr.isatty())
    failed = 0
    if args.format == "tsv":
        print("filename\tonset\toffset\tevent_label", flush=True)
    for path in args.files:
        try:
            _one_file(tagger, path, args, bar.for_file(path))
        except PannsError as exc:
            failed += 1
            bar.clear()
            if args.format == "json":
                print(json.dumps({"source": path, "error": str(exc)}), flush=True)
            print(f"panns-tag: {path}: {exc}", file=sys.stderr, flush=True)
            if args.debug:
                logging.getLogger("panns_infer").exception("while tagging %s", path)
        bar.clear()
    if failed:
        print(f"panns-tag: {failed} of {len(args.files)} file(s) failed", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def _event_options(args: argparse.Namespace) -> dict:
    return {"threshold": args.threshold, "offset_threshold": args.offset_threshold,
            "min_duration": args.min_duration, "min_gap": args.min_gap, "median_filter": args.median_filter}


def _one_file(tagger, path: str, args: argparse.Namespace, callback) -> None:
    if not (args.events or args.plot):
        tags = tagger.tag(path, top_k=args.top_k, callback=callback)
        print(json.dumps(tags.to_dict()) if args.format == "json" else _format_text(tags), flush=True)
        return
    if args.segment is not None:
        result = tagger.timeline(path, segment=args.segment, hop=args.hop or args.segment / 2, callback=callback)
    else:
        result = tagger.framewise(path, callback=callback)
    if args.plot:
        if args.segment is not None:
            raise UnsupportedOperationError("--plot draws framewise output; drop --segment")
        logmel = tagger.log_mel(path) if result.num_frames <= 60_000 else None  # up to 10 minutes
        result.plot(_plot_path(args.plot, path, len(args.files)), top_k=args.top_k,
                    logmel=None if logmel is None else logmel[: result.num_frames])
    if not args.events:
        return
    events = result.events(**_event_options(args))
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


class _ProgressLine:
    """A one-line progress display on stderr for long files (only on a terminal)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = False

    def for_file(self, path: str):
        if not self.enabled:
            return None

        def update(done: float, total: float) -> None:
            if total >= 60:  # only worth showing for long recordings
                pct = 100.0 * done / total if total else 100.0
                sys.stderr.write(f"\r{os.path.basename(path)}: {pct:5.1f}% ({done:.0f}/{total:.0f} s)")
                sys.stderr.flush()
                self.shown = True
        return update

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.shown = False


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``panns-tag``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="panns-tag: %(levelname)s: %(message)s")
    try:
        return _run(args, parser)
    except PannsError as exc:
        if args.debug:
            raise
        print(f"panns-tag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("panns-tag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
