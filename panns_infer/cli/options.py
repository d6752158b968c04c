"""The options of ``panns-tag``: the parser, and the checks that run before anything loads."""

from __future__ import annotations

import argparse
import math
import os
from typing import Optional

__all__ = ["build_parser", "check_options", "check_environment"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``panns-tag``."""
    p = argparse.ArgumentParser(
        prog="panns-tag",
        description="Tag audio files with a PANNs checkpoint (AudioSet, 527 classes).",
    )
    p.add_argument("files", nargs="*", metavar="INPUT",
                   help="audio or video files (WAV, FLAC, MP3, M4A, WebM, MP4, ...), directories, globs, or @MANIFEST "
                        "(a text file of paths, one per line)")
    p.add_argument("--checkpoint", "-c", default="Cnn14",
                   help="registry name (see --list-models), checkpoint file, or URL (default: Cnn14)")
    p.add_argument("--arch", help="architecture, to override detection from the checkpoint")
    p.add_argument("--labels", help="AudioSet-format label CSV (default: the cached AudioSet list)")
    p.add_argument("--top-k", "-k", type=int, default=10, help="labels to print per file (default: 10)")
    p.add_argument("--format", "-f", choices=["text", "json", "jsonl", "csv", "tsv"], default=None,
                   help="stdout: text (default), json (one JSON object per line) or tsv (DCASE events, with "
                        "--events); --output: jsonl, csv or tsv (default: from its extension); --list-models: "
                        "text, json (an array), jsonl or csv")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default: 8)")
    p.add_argument("--offline", action="store_true", help="never use the network (PANNS_INFER_OFFLINE=1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (downloads, files)")
    p.add_argument("--list-models", action="store_true", help="list the released checkpoints and exit")
    p.add_argument("--download", nargs="+", metavar="NAME", help="download checkpoints into the cache and exit")
    p.add_argument("--export-onnx", metavar="FILE.onnx",
                   help="write --checkpoint's network as ONNX, checked with onnxruntime, and exit "
                        "(needs: pip install 'panns-infer[onnx]')")
    p.add_argument("--window", type=float, default=None, metavar="SECONDS",
                   help="files longer than --whole-up-to run as overlapping windows this many seconds long, "
                        "their tags the max over windows (default, or 0: no windows; every file gives its "
                        "whole-file result, long ones computed in exact chunks)")
    p.add_argument("--whole-up-to", type=float, default=30.0, metavar="SECONDS",
                   help="files up to this long run in one pass; longer ones in exact chunks of about this "
                        "length, or as --window windows (default: 30)")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    corpus = p.add_argument_group("corpora")
    corpus.add_argument("--recursive", "-r", action="store_true", help="read the subfolders of directories too")
    corpus.add_argument("--extensions", metavar="LIST",
                        help="comma-separated extensions to pick in directories and globs (default: every "
                             "audio and video format read: wav,flac,ogg,mp3,m4a,mp4,webm,mkv,aac,wma,...)")
    corpus.add_argument("--output", "-o", metavar="FILE",
                        help="write one record per file to FILE (.jsonl, .csv; .tsv for --events), appending "
                             "as files finish; a re-run skips the files already done")
    corpus.add_argument("--embeddings", metavar="FILE", help="also save embeddings: FILE.npz (paths, embeddings, "
                        "sizes, mtimes, header) or FILE.npy (with FILE.npy.paths.jsonl); resumable on its own")
    corpus.add_argument("--full", action="store_true", help="add every class's probability to json/jsonl/csv records")
    corpus.add_argument("--overwrite", action="store_true",
                        help="start --output and --embeddings afresh instead of resuming (only files panns-tag "
                             "wrote: others are never replaced)")
    corpus.add_argument("--workers", type=int, default=None,
                        help="threads decoding ahead of the network (default: on CUDA min(8, CPUs), on the CPU the "
                             "cores torch leaves free; 0: none)")
    sed = p.add_argument_group("sound event detection")
    sed.add_argument("--events", action="store_true",
                     help="print sound events instead of tags (decision-level checkpoints, or any with --segment)")
    sed.add_argument("--segment", type=float, help="tag consecutive segments of this many seconds (timeline)")
    sed.add_argument("--hop", type=float, help="seconds between timeline segments (default: segment / 2); with "
                     "--stream, seconds of input between updates (default: 1; rounded down to whole steps of the "
                     "network, 0.32 s for Cnn14)")
    sed.add_argument("--threshold", type=float, default=0.5, help="event onset threshold (default: 0.5)")
    sed.add_argument("--offset-threshold", type=float, help="hysteresis: events last while p >= this")
    sed.add_argument("--min-duration", type=float, default=0.0, help="drop events shorter than this (s)")
    sed.add_argument("--min-gap", type=float, default=0.0, help="merge events closer than this (s)")
    sed.add_argument("--median-filter", type=float, help="median filter width in seconds")
    sed.add_argument("--plot", metavar="IMAGE",
                     help="save a plot of the top classes over time (needs panns-infer[plot]); with "
                          "several files, each file's position and name go before the extension "
                          "(IMAGE_1_name.png, ...)")
    live = p.add_argument_group("live audio")
    live.add_argument("--stream", metavar="SOURCE",
                      help="tag a live source every --hop seconds: '-' (standard input), a file that may still "
                           "be growing, or 'mic' (needs panns-infer[mic]); lines are flushed as they come")
    live.add_argument("--raw", metavar="FORMAT:RATE[:CHANNELS]",
                      help="the --stream bytes are headerless PCM, e.g. s16le:32000 (formats: u8, s8, s16le, "
                           "s16be, s32le, s32be, f32le, f32be, f64le, f64be); default: encoded audio")
    live.add_argument("--max-lag", type=float, metavar="SECONDS",
                      help="when the model falls this far behind a live source, skip to the newest audio and "
                           "report the skipped span (default: never skip, slow the writer down; 5 s for mic)")
    live.add_argument("--stream-mode", choices=("exact", "windows"), default="exact",
                      help="exact (default): framewise rows and tags final after the network's receptive field "
                           "(1.6 s for Cnn14_DecisionLevelMax) plus --hop, equal to the whole recording's; "
                           "windows: the latest --window every --hop")
    live.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                      help="end the stream after this long without data (default: 10 for a file, none for "
                           "standard input and mic)")
    return p



def check_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Optional[str]:
    """Check every option of a tagging or events run before anything loads; return the
    --output format (None: stdout). A bad option exits with status 2 through ``parser.error``,
    having run and written nothing."""
    from ..corpus.records import record_format

    _check_numbers(args, parser)
    _check_events(args, parser)
    check_environment(parser)
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
        if os.path.splitext(args.output)[1].lower() == ".json":
            parser.error(f"--output {args.output!r}: records are written as JSON Lines (one object per line, "
                         "not one JSON document): name the file .jsonl")
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
    if args.embeddings and os.path.splitext(args.embeddings)[1].lower() not in (".npz", ".npy"):
        parser.error(f"--embeddings {args.embeddings!r}: name the file .npz or .npy")
    if args.output and args.embeddings and os.path.realpath(args.output) == os.path.realpath(args.embeddings):
        parser.error("--output and --embeddings name the same file")
    for option, value in (("--output", args.output), ("--embeddings", args.embeddings), ("--plot", args.plot)):
        if value is not None:
            _check_folder(option, value, parser)
    return out


def _check_numbers(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.top_k < 0:
        parser.error("--top-k must be >= 0")
    if args.workers is not None and args.workers < 0:
        parser.error("--workers must be >= 0")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    for option, value in (("--window", args.window), ("--whole-up-to", args.whole_up_to)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            parser.error(f"{option} must be a number of seconds >= 0 (--window 0: no windows), got {value:g}")


def _check_events(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold is a probability: give a value in [0, 1], got {args.threshold:g}")
    if args.offset_threshold is not None:
        if not 0.0 <= args.offset_threshold <= 1.0:
            parser.error(f"--offset-threshold is a probability: give a value in [0, 1], got {args.offset_threshold:g}")
        if args.offset_threshold > args.threshold:
            parser.error(f"--offset-threshold ({args.offset_threshold:g}) must not be above --threshold "
                         f"({args.threshold:g}): an event lasts while p stays above the lower one")
    for option, value in (("--min-duration", args.min_duration), ("--min-gap", args.min_gap)):
        if not (math.isfinite(value) and value >= 0):
            parser.error(f"{option} must be a number of seconds >= 0, got {value:g}")
    if args.median_filter is not None and not (math.isfinite(args.median_filter) and args.median_filter > 0):
        parser.error(f"--median-filter must be a width in seconds > 0, got {args.median_filter:g}")
    if args.segment is not None:
        if not args.events:
            parser.error("--segment makes a timeline for --events: add --events (or drop --segment)")
        if args.plot:
            parser.error("--plot draws framewise output, which --segment does not give: drop --segment or --plot")
        if not (math.isfinite(args.segment) and args.segment > 0):
            parser.error(f"--segment must be a number of seconds > 0, got {args.segment:g}")
    if args.hop is not None:
        if args.segment is None:
            parser.error("--hop is the step between --segment timeline segments: add --segment (or drop --hop)")
        if not (math.isfinite(args.hop) and 0 < args.hop <= args.segment):
            parser.error(f"--hop must be > 0 and at most --segment ({args.segment:g} s), got {args.hop:g}")


def check_environment(parser: argparse.ArgumentParser) -> None:
    """Refuse a malformed ``PANNS_INFER_MIRROR`` as a usage error, even when offline."""
    from ..transport import _mirror_base

    try:
        _mirror_base()
    except ValueError as exc:
        parser.error(str(exc))


def _check_folder(option: str, path: str, parser: argparse.ArgumentParser) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"{option} {path!r}: the folder {folder!r} does not exist; create it first")
    if os.path.isdir(path):
        parser.error(f"{option} {path!r} is a folder: give a file name")
