"""``panns-tag --stream SOURCE``: live tags and events as lines flushed per hop; ``panns-tag -``:
one whole file from standard input.

By default (``--stream-mode exact``) each line's tags pool the steps that became final, of the
last ``--window`` seconds, and events are found on final rows that equal the whole
recording's; ``--stream-mode windows`` tags the latest window every hop.

    ffmpeg -i rtsp://camera/stream -f s16le -ac 1 -ar 32000 - \\
      | panns-tag --stream - --raw s16le:32000 --checkpoint Cnn14_DecisionLevelMax --events --format jsonl
    panns-tag --stream recording.wav --idle-timeout 30      # a file still being written
    panns-tag --stream mic --hop 0.5                        # needs panns-infer[mic]
    cat recording.wav | panns-tag -

With ``--format jsonl`` (or ``json``) each update is one JSON line ``{"type": "window",
"start", "end", "labels", "scores"}`` (``--full`` adds ``probabilities``), each closed event
``{"type": "event", "onset", "offset", "label", "score"}``, each span skipped because the
model fell behind (``--max-lag``) ``{"type": "skip", "start", "end"}``. Times are seconds of
stream time.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import sys
from typing import TYPE_CHECKING, Any, Callable, cast

from ..errors import InvalidArgumentError
from .common import EXIT_OK

if TYPE_CHECKING:
    from ..results import Framewise, Tags
    from ..stream import StreamUpdate
    from ..tagger import AudioTagger

__all__ = ["check_stream_options", "stream_main", "tag_stdin", "DEFAULT_STREAM_HOP", "DEFAULT_STREAM_WINDOW"]

DEFAULT_STREAM_HOP = 1.0
DEFAULT_STREAM_WINDOW = 10.0
_PATH_IDLE_TIMEOUT = 10.0  # a followed file that stops growing for this long has ended


def check_stream_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse option combinations that make no sense with ``--stream`` (before anything loads)."""
    if args.stream is None:
        if args.raw or args.max_lag is not None or args.idle_timeout is not None or args.stream_mode != "exact":
            parser.error("--raw, --max-lag, --idle-timeout and --stream-mode go with --stream SOURCE")
        return
    if args.files:
        parser.error("--stream reads one live source: drop the INPUT files")
    for flag, bad in (("--output", args.output), ("--embeddings", args.embeddings), ("--segment", args.segment),
                      ("--plot", args.plot)):
        if bad:
            parser.error(f"{flag} does not go with --stream (results are printed as they come)")
    if args.format not in (None, "text", "json", "jsonl"):
        parser.error(f"--stream prints text or JSON lines: use --format text or jsonl, not {args.format}")
    if args.raw and args.stream == "mic":
        parser.error("--raw declares the bytes of a pipe or file; the microphone needs none")
    if args.full and args.format not in ("json", "jsonl"):
        parser.error("--full adds probabilities to JSON lines: add --format jsonl")
    if args.top_k < 0:
        parser.error("--top-k must be >= 0")
    for flag, value in (("--hop", args.hop), ("--max-lag", args.max_lag), ("--idle-timeout", args.idle_timeout)):
        if value is not None and not value > 0:
            parser.error(f"{flag} must be > 0 seconds, got {value}")
    if args.raw:
        from ..stream_sources import parse_raw

        try:
            parse_raw(args.raw)
        except InvalidArgumentError as exc:
            parser.error(f"--raw: {exc}")


def _printer(args: argparse.Namespace) -> Callable[["StreamUpdate"], None]:
    as_json = args.format in ("json", "jsonl")

    def emit(u: "StreamUpdate") -> None:
        lines = []
        if u.skipped is not None:
            lines.append(json.dumps({"type": "skip", "start": u.skipped[0], "end": u.skipped[1]}) if as_json
                         else f"skipped {u.skipped[0]:.2f}-{u.skipped[1]:.2f} s (the model fell behind)")
        if u.tags is not None:
            if as_json:
                lines.append(json.dumps({"type": "window", **u.to_dict(full=args.full)}))
            else:
                shown = ", ".join(f"{label} {score:.3f}" for label, score in zip(u.tags.labels, u.tags.scores))
                lines.append(f"{u.start:8.2f} {u.end:8.2f}  {shown}")
        for e in u.events if args.events else []:
            lines.append(json.dumps({"type": "event", **e.to_dict()}) if as_json
                         else f"event {e.onset:8.2f} {e.offset:8.2f}  {e.score:.3f}  {e.label}")
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()

    return emit


def stream_main(tagger: "AudioTagger", args: argparse.Namespace) -> int:
    """Run ``--stream``; on Ctrl-C the results so far (open events included) are printed first."""
    from ..events import DEFAULT_THRESHOLD

    source: Any = args.stream
    if source == "-":
        source = sys.stdin.buffer
    idle = args.idle_timeout
    if idle is None and source not in ("mic",) and not hasattr(source, "read"):
        idle = _PATH_IDLE_TIMEOUT
    events = None
    if args.events:
        events = {"threshold": args.threshold if args.threshold is not None else DEFAULT_THRESHOLD,
                  "offset_threshold": args.offset_threshold, "min_duration": args.min_duration,
                  "min_gap": args.min_gap, "median_filter": args.median_filter}
    window = args.window if args.window and args.window > 0 else DEFAULT_STREAM_WINDOW
    gen = tagger.stream(source, raw=args.raw, window=window, hop=args.hop or DEFAULT_STREAM_HOP,
                        top_k=args.top_k, events=events, max_lag=args.max_lag, idle_timeout=idle,
                        mode=args.stream_mode)
    emit = _printer(args)
    try:
        for update in gen:
            emit(update)
    except KeyboardInterrupt:
        # still open: interrupted while printing, so let the stream flush what it holds
        if inspect.getgeneratorstate(gen) != inspect.GEN_CLOSED:
            try:
                emit(gen.throw(KeyboardInterrupt))
                for update in gen:
                    emit(update)
            except (KeyboardInterrupt, StopIteration):
                pass
        raise
    return EXIT_OK


def tag_stdin(tagger: "AudioTagger", args: argparse.Namespace) -> int:
    """``panns-tag -``: decode one whole encoded file from standard input and tag it."""
    import numpy as np

    from ..errors import AudioDecodeError, UnsupportedOperationError
    from ..stream_sources import encoded_blocks

    data = sys.stdin.buffer.read()
    if not data:
        raise AudioDecodeError("standard input was empty: pipe an audio file into panns-tag -")
    blocks = list(encoded_blocks(io.BytesIO(data)))
    if not blocks:
        raise AudioDecodeError("standard input holds no audio samples")
    rate = blocks[0][0]
    x = np.concatenate([b for _, b in blocks])
    if args.events:
        if not tagger.model.has_framewise:
            raise UnsupportedOperationError(f"{tagger.arch} has no framewise output: use Cnn14_DecisionLevelMax")
        framewise = cast("Framewise", tagger.framewise(x, sample_rate=rate))  # one clip in, one result out
        found = framewise.events(
            threshold=args.threshold, offset_threshold=args.offset_threshold, min_duration=args.min_duration,
            min_gap=args.min_gap, median_filter=args.median_filter)
        if args.format in ("json", "jsonl"):
            print(json.dumps({"source": "-", "events": [e.to_dict() for e in found]}), flush=True)
        else:
            for e in found:
                print(f"-\t{e.onset:.3f}\t{e.offset:.3f}\t{e.label}", flush=True)
        return EXIT_OK
    tags = cast("Tags", tagger.tag(x, sample_rate=rate, top_k=args.top_k))  # one clip in, one result out
    if args.format in ("json", "jsonl"):
        record = tags.to_dict(full=args.full)
        record["source"] = "-"
        print(json.dumps(record), flush=True)
    else:
        print("-:\n" + "\n".join(f"  {s:.3f}  {label}" for label, s in zip(tags.labels, tags.scores)), flush=True)
    return EXIT_OK
