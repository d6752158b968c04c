"""The options of ``panns-tag``: the parser, and the checks that run before anything loads."""

from __future__ import annotations

import argparse
from typing import Optional

__all__ = ["build_parser", "check_options"]


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
    sed.add_argument("--hop", type=float, help="seconds between timeline segments (default: segment / 2); with "
                     "--stream, seconds of input between updates (default: 1; rounded down to 0.32 s segments "
                     "for decision-level checkpoints)")
    sed.add_argument("--threshold", type=float, default=0.5, help="event onset threshold (default: 0.5)")
    sed.add_argument("--offset-threshold", type=float, help="hysteresis: events last while p >= this")
    sed.add_argument("--min-duration", type=float, default=0.0, help="drop events shorter than this (s)")
    sed.add_argument("--min-gap", type=float, default=0.0, help="merge events closer than this (s)")
    sed.add_argument("--median-filter", type=float, help="median filter width in seconds")
    sed.add_argument("--plot", metavar="IMAGE",
                     help="save a plot of the top classes over time (needs panns-infer[plot]); with "
                          "several files, the file name is inserted before the extension")
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
    live.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                      help="end the stream after this long without data (default: 10 for a file, none for "
                           "standard input and mic)")
    return p



def check_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Optional[str]:
    """Check the output options; return the --output format (None: stdout)."""
    from ..corpus import record_format

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


