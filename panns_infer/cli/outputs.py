"""What ``panns-tag`` writes into output files to identify them: the run's header, and the
resolved file list that records are keyed by."""

from __future__ import annotations

import argparse
import hashlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..corpus import RunHeader
    from ..tagger import AudioTagger

__all__ = ["model_name", "run_header", "resolved"]


def model_name(tagger: "AudioTagger", checkpoint: str) -> str:
    """The checkpoint's registry name when it was given by one, else its file name."""
    from ..registry import get_checkpoint

    try:
        return get_checkpoint(checkpoint).name
    except Exception:  # noqa: BLE001 - a path or a URL: not a registry name
        return os.path.basename(os.fspath(tagger.checkpoint_path))


def run_header(tagger: "AudioTagger", args: argparse.Namespace, output: str) -> "RunHeader":
    """The header of an output file of this run: checkpoint, architecture and the options that
    shape its records (``output`` is ``"tags"``, ``"events"`` or ``"embeddings"``)."""
    from ..corpus import RunHeader, checkpoint_sha256

    options: dict = {"output": output, "window": args.window or None, "whole_up_to": args.whole_up_to}
    if output == "tags":
        options.update(top_k=args.top_k, full=args.full, labels=_labels_digest(tagger))
    elif output == "events":
        options.update(threshold=args.threshold, offset_threshold=args.offset_threshold,
                       min_duration=args.min_duration, min_gap=args.min_gap, median_filter=args.median_filter,
                       segment=args.segment, hop=(args.hop or args.segment / 2) if args.segment else None,
                       labels=_labels_digest(tagger))
    return RunHeader(model=model_name(tagger, args.checkpoint), sha256=checkpoint_sha256(tagger.checkpoint_path),
                     arch=tagger.arch, options=options)


def _labels_digest(tagger: "AudioTagger") -> str:
    """The class names, as the first 16 hex digits of the SHA-256 of their lines."""
    return hashlib.sha256("\n".join(tagger.labels).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def resolved(files: list[str]) -> list[str]:
    """Files as resolved absolute paths, each once (the key of a record), in order.

    >>> resolved(["a.wav", "./a.wav"]) == [os.path.realpath("a.wav")]
    True
    """
    from ..corpus import record_key

    return list(dict.fromkeys(record_key(p) for p in files))
