"""``panns-tag`` tagging runs: files to stdout, or to record and embedding files with resume."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Optional, cast

from ..errors import PannsError, UnsupportedOperationError
from .common import EXIT_OK, EXIT_SOME_FAILED, report_failure

if TYPE_CHECKING:
    from ..corpus import EmbeddingStore, FileResult, RecordFile
    from ..results import Tags
    from ..tagger import AudioTagger

__all__ = ["tag_files", "resume", "worth_optimizing"]


# Building the CPU fast path (panns_infer.fast) takes ~0.4 s for Cnn14 and saves ~40% of the
# network time, ~0.1 s per 6 s of audio: below about this much audio a run is faster without.
_OPTIMIZE_MIN_SECONDS = 30.0


def worth_optimizing(files: list[str]) -> bool:
    """Whether the fast path pays for itself on ``files`` (from their headers; a handful of
    short files, such as one clip tagged from a shell, start faster on the plain network)."""
    from ..audio import probe_file

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


def _format_text(r: "FileResult") -> str:
    lines = [f"{r.path}:"]
    tags = cast("Tags", r.tags)  # text output is for results without an error, which carry tags
    lines += [f"  {score:.3f}  {label}" for label, score in zip(tags.labels, tags.scores)]
    return "\n".join(lines)


def tag_files(tagger: "AudioTagger", files: list[str], args: argparse.Namespace, out_format: Optional[str]) -> int:
    """Tag files with overlapped decoding and cross-file batches, to stdout or files."""
    from ..corpus import EmbeddingStore, Progress, RecordFile, tag_corpus
    from .outputs import model_name, resolved, run_header

    records = store = batches = None
    model = model_name(tagger, args.checkpoint)
    to_files = bool(args.output or args.embeddings)
    todo = resolved(files) if to_files else files
    if args.embeddings and tagger.embedding_size is None:
        raise UnsupportedOperationError(f"{tagger.arch} is a decision-level model and has no embedding "
                                        "output: drop --embeddings or use a clip-level checkpoint")
    store_done = False
    new_output = bool(args.output) and not os.path.exists(args.output)
    try:
        if args.output:
            records = RecordFile(args.output, header=run_header(tagger, args, "tags"), format=out_format,
                                 top_k=args.top_k, full=args.full, class_names=tagger.labels,
                                 overwrite=args.overwrite)
        if args.embeddings:
            try:
                store = EmbeddingStore(args.embeddings, cast(int, tagger.embedding_size),  # checked above
                                       header=run_header(tagger, args, "embeddings"), overwrite=args.overwrite)
            except PannsError:
                if records is not None and new_output:  # refused: leave no trace of this run
                    records.close()
                    records = None
                    os.unlink(args.output)
                raise
        if to_files:
            todo = resume(todo, records, store)
        fail_count = 0
        bar = Progress(len(todo), enabled=not args.no_progress and sys.stderr.isatty())
        batches = tag_corpus(tagger, todo, top_k=args.top_k, embeddings=store is not None, workers=args.workers,
                             callback=bar.within)
        for batch in batches:
            if store is not None:
                store.append(batch)  # rows first: a record in --output promises its embedding
            if records is not None:
                records.append(batch)
            for r in batch:
                if not r.ok:
                    fail_count += 1
                    bar.clear()
                    report_failure(r.path, r.error, r.exception, args)
                if records is None:
                    bar.clear()  # the progress line must not run into the results
                    _print_result(r, args, model)
            bar.update(batch)
        bar.clear()
        if store is not None:
            store_done = True
            store.finalize()
    finally:
        if batches is not None:
            batches.close()  # on Ctrl-C: cancel the queued decodes now, not at exit
        if records is not None:
            records.close()
        if store is not None and not store_done:
            store.close()
    if fail_count:
        print(f"panns-tag: {fail_count} of {len(todo)} file(s) failed", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def resume(files: list[str], records: Optional["RecordFile"], store: Optional["EmbeddingStore"]) -> list[str]:
    """The files still to do (``files`` are resolved paths); drop the records of those about
    to be redone."""
    from ..corpus import file_stat

    todo = []
    for path in files:
        size, mtime = file_stat(path)
        if not ((records is None or records.is_done(path, size, mtime))
                and (store is None or store.has(path, size, mtime))):
            todo.append(path)
    if records is not None:
        records.drop(todo)  # errors are retried, changed files recomputed: their old records go
    if len(todo) < len(files):
        where = " and ".join(o.path for o in (records, store) if o is not None)
        print(f"panns-tag: {len(files) - len(todo)} of {len(files)} file(s) already done in {where}; "
              f"{len(todo)} to do", file=sys.stderr, flush=True)
    return todo


def _print_result(r: "FileResult", args: argparse.Namespace, model: str) -> None:
    if args.format == "json":
        print(json.dumps(r.to_dict(full=args.full, model=model)), flush=True)
    elif r.ok:
        print(_format_text(r), flush=True)
