"""``panns-tag``: tag audio files from the command line.

    panns-tag dog.flac --checkpoint Cnn14 --top-k 5
    panns-tag a.wav b.mp3 --checkpoint Cnn14_mAP=0.431.pth --format json
    panns-tag --list-models
    panns-tag --download Cnn14 Cnn14_DecisionLevelMax

Exit status: 0 when every file was tagged, 1 when some failed (each failure is reported on
stderr and the other files are still tagged), 2 for usage errors and setup failures (bad
checkpoint, labels, device). User errors never print a traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional, Sequence

from .errors import PannsError

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
    p.add_argument("--format", "-f", choices=["text", "json"], default="text",
                   help="text (default) or json (one JSON object per line)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default: 8)")
    p.add_argument("--offline", action="store_true", help="never use the network (PANNS_INFER_OFFLINE=1)")
    p.add_argument("--no-progress", action="store_true", help="no download progress bars")
    p.add_argument("--list-models", action="store_true", help="list the released checkpoints and exit")
    p.add_argument("--download", nargs="+", metavar="NAME", help="download checkpoints into the cache and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
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

    tagger = AudioTagger(args.checkpoint, arch=args.arch, device=args.device, labels=args.labels,
                         batch_size=args.batch_size, offline=args.offline or None, progress=progress)
    _ = tagger.labels  # fail early (exit 2) when the labels cannot be had
    failed = 0
    for path in args.files:
        try:
            tags = tagger.tag(path, top_k=args.top_k)
        except PannsError as exc:
            failed += 1
            if args.format == "json":
                print(json.dumps({"source": path, "error": str(exc)}), flush=True)
            print(f"panns-tag: {path}: {exc}", file=sys.stderr, flush=True)
            if args.debug:
                logging.getLogger("panns_infer").exception("while tagging %s", path)
            continue
        print(json.dumps(tags.to_dict()) if args.format == "json" else _format_text(tags), flush=True)
    if failed:
        print(f"panns-tag: {failed} of {len(args.files)} file(s) failed", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


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
