"""``panns-tag``: tag audio files from the command line.

    panns-tag dog.flac --checkpoint Cnn14 --top-k 5
    panns-tag a.wav b.mp3 --checkpoint Cnn14_mAP=0.431.pth --format json
    panns-tag ~/field_recordings --recursive --output tags.jsonl          # a corpus; re-run to resume
    panns-tag @manifest.txt --embeddings emb.npz --output tags.csv
    panns-tag --list-models
    panns-tag --download Cnn14 Cnn14_DecisionLevelMax
    panns-tag --export-onnx cnn14.onnx --checkpoint Cnn14          # needs panns-infer[onnx]
    panns-tag street.flac --checkpoint Cnn14_DecisionLevelMax --events --format tsv --plot out.png
    panns-tag street.flac --checkpoint Wavegram_Logmel_Cnn14 --events --segment 2 --hop 1

Inputs are files, directories (``--recursive`` for subfolders), globs and ``@manifest`` files
(see :func:`panns_infer.corpus.discover`). Without ``--output`` results go to stdout (text,
json, or DCASE tsv with ``--events``); with ``--output FILE`` (``.jsonl``, ``.csv``, or
``.tsv`` for events) and/or ``--embeddings FILE`` (``.npz``, ``.npy``) they are appended and
fsynced as they come, and a re-run skips the files already done (same path, size, mtime).

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
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from .errors import PannsError, UnsupportedOperationError

if TYPE_CHECKING:
    from .corpus import EmbeddingStore, FileResult, RecordFile
    from .tagger import AudioTagger

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``panns-tag``."""
    p = argparse.ArgumentParser(
        prog="panns-tag",
        description="Tag audio files with a PANNs checkpoint (AudioSet, 527 classes).",
    )
    p.add_argument("files", nargs="*", metavar="INPUT",
                   help="audio files (any format libsndfile reads), directories, globs, or @MANIFEST "
                        "(a text file of paths, one per line)")
    p.add_argument("--checkpoint", "-c", default="Cnn14",
                   help="registry name (see --list-models), checkpoint file, or URL (default: Cnn14)")
    p.add_argument("--arch", help="architecture, to override detection from the checkpoint")
    p.add_argument("--labels", help="AudioSet-format label CSV (default: the cached AudioSet list)")
    p.add_argument("--top-k", "-k", type=int, default=10, help="labels to print per file (default: 10)")
    p.add_argument("--format", "-f", choices=["text", "json", "jsonl", "csv", "tsv"], default=None,
                   help="stdout: text (default), json (one JSON object per line) or tsv (DCASE events, with "
                        "--events); --output: jsonl, csv or tsv (default: from its extension)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default: 8)")
    p.add_argument("--offline", action="store_true", help="never use the network (PANNS_INFER_OFFLINE=1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (downloads, files)")
    p.add_argument("--list-models", action="store_true", help="list the released checkpoints and exit")
    p.add_argument("--download", nargs="+", metavar="NAME", help="download checkpoints into the cache and exit")
    p.add_argument("--export-onnx", metavar="FILE.onnx",
                   help="write --checkpoint's network as ONNX, checked with onnxruntime, and exit "
                        "(needs: pip install 'panns-infer[onnx]')")
    p.add_argument("--window", type=float, default=10.0,
                   help="files longer than --whole-up-to run as overlapping windows this many seconds long "
                        "(default: 10; 0 runs every file whole)")
    p.add_argument("--whole-up-to", type=float, default=30.0, metavar="SECONDS",
                   help="files up to this long run whole, as the reference runs them (default: 30)")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    corpus = p.add_argument_group("corpora")
    corpus.add_argument("--recursive", "-r", action="store_true", help="read the subfolders of directories too")
    corpus.add_argument("--extensions", metavar="LIST",
                        help="comma-separated extensions to pick in directories and globs (default: every "
                             "format libsndfile reads: wav,flac,ogg,opus,mp3,aiff,...)")
    corpus.add_argument("--output", "-o", metavar="FILE",
                        help="write one record per file to FILE (.jsonl, .csv; .tsv for --events), appending "
                             "as files finish; a re-run skips the files already done")
    corpus.add_argument("--embeddings", metavar="FILE", help="also save embeddings: FILE.npz (paths, embeddings, "
                        "sizes, mtimes) or FILE.npy (with FILE.npy.paths.txt)")
    corpus.add_argument("--full", action="store_true", help="add every class's probability to json/jsonl/csv records")
    corpus.add_argument("--overwrite", action="store_true",
                        help="start --output and --embeddings afresh instead of resuming")
    corpus.add_argument("--workers", type=int, default=None,
                        help="threads decoding ahead of the network (default: on CUDA min(8, CPUs), on the CPU the "
                             "cores torch leaves free; 0: none)")
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
    if args.export_onnx:
        from .export import to_onnx

        print(to_onnx(args.checkpoint, args.export_onnx, arch=args.arch, offline=args.offline or None))
        return EXIT_OK
    if not args.files:
        parser.print_usage(sys.stderr)
        print("panns-tag: error: give at least one FILE (or --list-models / --download / --export-onnx)", file=sys.stderr)
        return EXIT_USAGE
    if args.top_k < 0:
        parser.error("--top-k must be >= 0")
    if args.workers is not None and args.workers < 0:
        parser.error("--workers must be >= 0")
    out_format = _check_options(args, parser)

    from .corpus import discover

    extensions = None if not args.extensions else [e.strip() for e in args.extensions.split(",") if e.strip()]
    files = discover(args.files, recursive=args.recursive, extensions=extensions)
    if not files:
        print(f"panns-tag: error: no audio files found in {' '.join(args.files)}", file=sys.stderr)
        return EXIT_USAGE

    from .tagger import AudioTagger

    tagger = AudioTagger(args.checkpoint, arch=args.arch, device=args.device, labels=args.labels,
                         batch_size=args.batch_size, offline=args.offline or None, progress=progress,
                         window=args.window if args.window and args.window > 0 else None,
                         whole_up_to=args.whole_up_to,
                         optimize=_worth_optimizing(files))
    _ = tagger.labels  # fail early (exit 2) when the labels cannot be had
    if (args.events or args.plot) and not tagger.model.has_framewise and args.segment is None:
        raise UnsupportedOperationError(
            f"{tagger.arch} has no framewise output: use a sound event detection checkpoint "
            "(Cnn14_DecisionLevelMax, Cnn14_DecisionLevelAtt) or add --segment SECONDS for a timeline")
    if args.events or args.plot:
        if out_format is not None:
            return _events_to_file(tagger, files, args, out_format)
        return _events_to_stdout(tagger, files, args)
    return _tag_files(tagger, files, args, out_format)


# Building the CPU fast path (panns_infer.fast) takes ~0.4 s for Cnn14 and saves ~40% of the
# network time, ~0.1 s per 6 s of audio: below about this much audio a run is faster without.
_OPTIMIZE_MIN_SECONDS = 30.0


def _worth_optimizing(files: list[str]) -> bool:
    """Whether the fast path pays for itself on ``files`` (from their headers; a handful of
    short files, such as one clip tagged from a shell, start faster on the plain network)."""
    from .audio import probe_file

    if len(files) > 8:
        return True
    seconds = 0.0
    for path in files:
        try:
            frames, rate = probe_file(path)
        except PannsError:  # reported when the file is tagged
            continue
        seconds += frames / rate
    return seconds >= _OPTIMIZE_MIN_SECONDS


def _check_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Optional[str]:
    """Check the output options; return the --output format (None: stdout)."""
    from .corpus import record_format

    fmt = args.format
    if args.output is None:
        if fmt in ("jsonl", "csv"):
            parser.error(f"--format {fmt} writes a file: add --output FILE")
        if fmt == "tsv" and not args.events:
            parser.error("--format tsv writes events: add --events")
        if args.full and fmt != "json":
            parser.error("--full adds probabilities to records: use --format json or --output FILE.jsonl/.csv")
        out = None
    else:
        by_ext = record_format(args.output)
        wanted = {"json": "jsonl", "text": None}.get(fmt, fmt) if fmt else by_ext
        if fmt == "text" or wanted is None:
            parser.error(f"cannot tell the format of --output {args.output!r}: name it .jsonl, .csv or .tsv, or "
                         "add --format jsonl|csv|tsv")
        if fmt and by_ext and by_ext != wanted:
            parser.error(f"--format {fmt} does not match --output {args.output!r}")
        if wanted == "tsv" and not args.events:
            parser.error("a .tsv output holds events: add --events (or write .jsonl or .csv)")
        if args.events and wanted == "csv":
            parser.error("events are written to .tsv (DCASE) or .jsonl, not .csv")
        if args.full and wanted == "tsv":
            parser.error("--full adds probabilities to records: use a .jsonl or .csv output")
        out = wanted
    if args.plot and (args.output or args.embeddings):
        parser.error("--plot draws files one by one on stdout runs: drop --output/--embeddings")
    if args.embeddings and args.events:
        parser.error("--embeddings comes from tagging runs: drop --events")
    return out


def _tag_files(tagger: "AudioTagger", files: list[str], args: argparse.Namespace, out_format: Optional[str]) -> int:
    """Tag files with overlapped decoding and cross-file batches, to stdout or files."""
    from .corpus import EmbeddingStore, Progress, RecordFile, tag_corpus

    records = store = batches = None
    todo = files
    try:
        if args.output:
            records = RecordFile(args.output, format=out_format, top_k=args.top_k, full=args.full,
                                 class_names=tagger.labels, overwrite=args.overwrite)
        if args.embeddings:
            if tagger.embedding_size is None:
                raise UnsupportedOperationError(f"{tagger.arch} is a decision-level model and has no embedding "
                                                "output: drop --embeddings or use a clip-level checkpoint")
            store = EmbeddingStore(args.embeddings, tagger.embedding_size, overwrite=args.overwrite)
        if records is not None:
            todo = _resume(files, records, store)
        fail_count = 0
        bar = Progress(len(todo), enabled=not args.no_progress and sys.stderr.isatty())
        batches = tag_corpus(tagger, todo, top_k=args.top_k, embeddings=store is not None, workers=args.workers)
        for batch in batches:
            if store is not None:
                store.append(batch)  # rows first: a record in --output promises its embedding
            if records is not None:
                records.append(batch)
            for r in batch:
                if not r.ok:
                    fail_count += 1
                    bar.clear()
                    _report_failure(r.path, r.error, r.exception, args)
                if records is None:
                    _print_result(r, args)
            bar.update(batch)
        bar.clear()
    finally:
        if batches is not None:
            batches.close()  # on Ctrl-C: cancel the queued decodes now, not at exit
        if records is not None:
            records.close()
    if store is not None:
        store.finalize()
    if fail_count:
        print(f"panns-tag: {fail_count} of {len(todo)} file(s) failed", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def _resume(files: list[str], records: "RecordFile", store: Optional["EmbeddingStore"]) -> list[str]:
    """The files still to do; drop the records of those about to be redone."""
    from .corpus import file_stat

    todo = []
    for path in files:
        size, mtime = file_stat(path)
        if not (records.is_done(path, size, mtime) and (store is None or store.has(path, size, mtime))):
            todo.append(path)
    records.drop(todo)  # errors are retried, changed files recomputed: their old records go
    if len(todo) < len(files):
        print(f"panns-tag: {len(files) - len(todo)} of {len(files)} file(s) already done in {records.path}; "
              f"{len(todo)} to do", file=sys.stderr, flush=True)
    return todo


def _report_failure(path: Optional[str], error: Optional[str], exc: Optional[BaseException],
                    args: argparse.Namespace) -> None:
    """A failed file: one line on stderr; with --debug, its traceback through the log."""
    print(f"panns-tag: {path}: {error}", file=sys.stderr, flush=True)
    if args.debug and exc is not None:
        logging.getLogger("panns_infer").error("while tagging %s", path,
                                               exc_info=(type(exc), exc, exc.__traceback__))


def _print_result(r: "FileResult", args: argparse.Namespace) -> None:
    if args.format == "json":
        record = {"source": r.path, "error": r.error} if not r.ok else r.tags.to_dict(full=args.full)
        print(json.dumps(record), flush=True)
    elif r.ok:
        print(_format_text(r.tags), flush=True)


def _events_to_stdout(tagger: "AudioTagger", files: list[str], args: argparse.Namespace) -> int:
    bar = _ProgressLine(enabled=not args.no_progress and sys.stderr.isatty())
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
            _report_failure(path, str(exc), exc, args)
        bar.clear()
    if failed:
        print(f"panns-tag: {failed} of {len(files)} file(s) failed", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def _events_to_file(tagger: "AudioTagger", files: list[str], args: argparse.Namespace, out_format: str) -> int:
    """Events of each file as JSONL records, or a DCASE TSV written at the end; resumable."""
    from .corpus import EventsTsv, FileResult, Progress, RecordFile, file_stat
    from .audio import probe_file

    records = (EventsTsv(args.output, overwrite=args.overwrite) if out_format == "tsv"
               else RecordFile(args.output, format="jsonl", top_k=0, overwrite=args.overwrite))
    failed = 0
    try:
        todo = _resume(files, records, None)
        bar = Progress(len(todo), enabled=not args.no_progress and sys.stderr.isatty())
        for path in todo:
            size, mtime = file_stat(path)
            res = FileResult(path, size=size, mtime=mtime)
            try:
                frames, rate = probe_file(path)
                result = _detect(tagger, path, args)
                res.duration, res.sample_rate = frames / rate, rate
                res.events = [e.to_dict() for e in result.events(**_event_options(args))]
            except PannsError as exc:
                res.error = str(exc)
                failed += 1
                bar.clear()
                _report_failure(path, res.error, exc, args)
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
