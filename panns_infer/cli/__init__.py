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
    ffmpeg -i URL -f s16le -ac 1 -ar 32000 - | panns-tag --stream - --raw s16le:32000 --format jsonl
    cat recording.wav | panns-tag -                                # one file from standard input

Inputs are files, directories (``--recursive`` for subfolders), globs and ``@manifest`` files
(see :func:`panns_infer.corpus.discover`). Without ``--output`` results go to stdout (text,
json, or DCASE tsv with ``--events``); with ``--output FILE`` (``.jsonl``, ``.csv``, or
``.tsv`` for events) and/or ``--embeddings FILE`` (``.npz``, ``.npy``) they are appended and
fsynced as they come, and a re-run skips the files already done (same resolved path, size,
mtime). Each output file starts with a header naming the checkpoint (and its SHA-256), the
architecture and the options that shape its records; a re-run refuses (exit 2) a file with
another header, a file panns-tag did not write, and one another run is writing. Every option
is checked before anything loads.

Exit status: 0 when every file was tagged, 1 when some failed (each failure is reported on
stderr and the other files are still tagged), 2 for usage errors and setup failures (bad
checkpoint, labels, device), 141 (128 + SIGPIPE, as for other Unix tools) when the output
went into a closed pipe (``| head``): then it stops quietly, keeping the records already
written to ``--output``. User errors never print a traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from typing import Optional, Sequence

from ..errors import PannsError, UnsupportedOperationError
from .common import EXIT_BROKEN_PIPE, EXIT_OK, EXIT_USAGE
from .events import events_to_file, events_to_stdout
from .options import build_parser, check_environment, check_options
from .stream import check_stream_options
from .tagging import tag_files, worth_optimizing

__all__ = ["main", "build_parser"]


def _list_models(fmt: Optional[str], parser: argparse.ArgumentParser) -> int:
    from ..catalog import list_models

    if fmt not in (None, "text", "json", "jsonl", "csv"):
        parser.error(f"--list-models prints text, json, jsonl or csv, not {fmt}")
    models = list_models()
    if fmt == "json":
        print(json.dumps([m.to_dict() for m in models], indent=2))
        return EXIT_OK
    if fmt == "jsonl":
        for m in models:
            print(json.dumps(m.to_dict()))
        return EXIT_OK
    if fmt == "csv":
        rows = [m.to_dict() for m in models]
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return EXIT_OK
    print(f"{'name':<24} {'arch':<24} {'rate':>6} {'mAP':>6} {'emb':>5} {'sed':>4} {'min s':>6}  pinned")
    for m in models:
        emb = "-" if m.embedding_size is None else str(m.embedding_size)
        print(f"{m.name:<24} {m.arch:<24} {m.sample_rate:>6} {m.mAP:>6.3f} {emb:>5} "
              f"{'yes' if m.framewise else 'no':>4} {m.min_seconds:>6.2f}  {'yes' if m.pinned else 'no'}")
    return EXIT_OK


def _download(names: Sequence[str], offline: bool, progress: Optional[bool]) -> int:
    from ..hub import download

    for name in names:
        path = download(name, offline=offline or None, progress=progress)
        print(path)
    return EXIT_OK


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    progress = False if args.no_progress else None
    if args.list_models:
        return _list_models(args.format, parser)
    check_environment(parser)
    if args.download:
        return _download(args.download, args.offline, progress)
    if args.export_onnx:
        from ..export import to_onnx

        print(to_onnx(args.checkpoint, args.export_onnx, arch=args.arch, offline=args.offline or None))
        return EXIT_OK
    check_stream_options(args, parser)
    if args.stream is not None or args.files == ["-"]:
        return _live(args)
    if not args.files:
        parser.print_usage(sys.stderr)
        print("panns-tag: error: give at least one FILE (or --list-models / --download / --export-onnx)",
              file=sys.stderr)
        return EXIT_USAGE
    out_format = check_options(args, parser)

    from ..corpus import discover

    extensions = None if not args.extensions else [e.strip() for e in args.extensions.split(",") if e.strip()]
    files = discover(args.files, recursive=args.recursive, extensions=extensions)
    if not files:
        print(f"panns-tag: error: no audio files found in {' '.join(args.files)}", file=sys.stderr)
        return EXIT_USAGE

    from ..tagger import AudioTagger

    tagger = AudioTagger(args.checkpoint, arch=args.arch, device=args.device, labels=args.labels,
                         batch_size=args.batch_size, offline=args.offline or None, progress=progress,
                         window=args.window or None,
                         whole_up_to=args.whole_up_to,
                         optimize=worth_optimizing(files))
    _ = tagger.labels  # fail early (exit 2) when the labels cannot be had
    if (args.events or args.plot) and not tagger.model.has_framewise and args.segment is None:
        raise UnsupportedOperationError(
            f"{tagger.arch} has no framewise output: use a sound event detection checkpoint "
            "(Cnn14_DecisionLevelMax, Cnn14_DecisionLevelAtt) or add --segment SECONDS for a timeline")
    if args.events or args.plot:
        if out_format is not None:
            return events_to_file(tagger, files, args, out_format)
        return events_to_stdout(tagger, files, args)
    return tag_files(tagger, files, args, out_format)


def _reader_gone() -> int:
    """Output went into a closed pipe (``panns-tag ... | head -1``): stop quietly, as Unix tools
    do. Records already written to ``--output`` files were closed on the way out; stdout and
    stderr are pointed at the null device so that nothing left in their buffers fails again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _live(args: argparse.Namespace) -> int:
    """``--stream SOURCE`` and ``panns-tag -`` (one file from standard input)."""
    from ..tagger import AudioTagger
    from .stream import stream_main, tag_stdin

    tagger = AudioTagger(args.checkpoint, arch=args.arch, device=args.device, labels=args.labels,
                         batch_size=args.batch_size, offline=args.offline or None,
                         progress=False if args.no_progress else None)
    _ = tagger.labels  # fail early (exit 2) when the labels cannot be had
    if args.events and not tagger.model.has_framewise:
        raise UnsupportedOperationError(
            f"{tagger.arch} has no framewise output: use a sound event detection checkpoint "
            "(Cnn14_DecisionLevelMax, Cnn14_DecisionLevelAtt)")
    return stream_main(tagger, args) if args.stream is not None else tag_stdin(tagger, args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``panns-tag``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="panns-tag: %(levelname)s: %(message)s")
    try:
        try:
            return _run(args, parser)
        finally:
            sys.stdout.flush()  # a reader that went away shows here, not as a traceback at exit
    except BrokenPipeError:
        return _reader_gone()
    except (PannsError, OSError) as exc:  # typed errors, and a file the system refused (permissions, full disk)
        if args.debug:
            raise
        print(f"panns-tag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("panns-tag: interrupted", file=sys.stderr)
        return 130


