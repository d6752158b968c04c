"""Tagging a corpus: finding the files, running them with overlapped decoding, and resumable
output files.

Used by ``panns-tag`` and usable on its own:

* :func:`discover` turns command-line style inputs (files, directories, globs and
  ``@manifest`` files) into a list of audio file paths.
* :func:`tag_corpus` runs an :class:`~panns_infer.AudioTagger` over many files. A bounded
  pool of threads decodes and resamples ahead of the network (libsndfile and resampy release
  the GIL while they work), and windows of different files share a forward pass when their
  lengths match. Results equal those of tagging each file alone (the engine groups by length
  and never pads one clip to another).
* :class:`RecordFile` (JSONL or CSV, one record per file), :class:`EventsTsv` and
  :class:`EmbeddingStore` (``.npz``/``.npy``) add results as they come and fsync them after
  every batch. Each starts with a :class:`RunHeader` (tool, checkpoint name and SHA-256,
  architecture, record-shaping options) and is locked while a run writes it. On a re-run they
  skip files already done (same resolved path, size and mtime), and refuse a file made with
  another checkpoint or other options, or not written by this package at all. A kill loses
  at most the batch in flight, and the next run repairs a torn last line.

>>> r = FileResult("a.wav", size=64044, mtime=1700000000.0, duration=1.0, sample_rate=32000)
>>> r.to_dict()
{'path': 'a.wav', 'duration': 1.0, 'sample_rate': 32000, 'model': None, 'size': 64044, 'mtime': 1700000000.0}
>>> is_audio_name("take 1.FLAC"), is_audio_name("notes.txt")
(True, False)
"""

from .discovery import AUDIO_EXTENSIONS, discover, file_stat, is_audio_name, read_manifest
from .embeddings import EmbeddingStore
from .header import RunHeader, checkpoint_sha256, record_key
from .records import EventsTsv, RecordFile, record_format, tsv_name_problem
from .run import FileResult, Progress, tag_corpus

__all__ = ["AUDIO_EXTENSIONS", "is_audio_name", "read_manifest", "discover", "FileResult", "tag_corpus",
           "RecordFile", "record_format", "EmbeddingStore", "EventsTsv", "Progress", "file_stat",
           "RunHeader", "record_key", "checkpoint_sha256", "tsv_name_problem"]
