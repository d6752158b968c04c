"""Ray Data: tag a dataset of audio files or encoded audio on a cluster.

:class:`PannsPredictor` is a callable class for ``Dataset.map_batches``: each Ray actor
loads the checkpoint once, on a GPU when the actor has one, and tags the batches it is
given. It needs nothing from Ray itself (this module never imports it), so it can also be
called on a plain dict of columns, e.g. in a test.

>>> import ray                                                             # doctest: +SKIP
>>> from panns_infer.integrations.ray import PannsPredictor
>>> ds = ray.data.read_binary_files("s3://bucket/audio/", include_paths=True)  # doctest: +SKIP
>>> ds = ds.map_batches(PannsPredictor, fn_constructor_kwargs={"checkpoint": "Cnn14"},
...                     concurrency=4, num_gpus=1, batch_size=32)          # doctest: +SKIP
>>> ds.write_parquet("out/")                                               # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union, cast

import numpy as np

from ..errors import AudioDecodeError, InvalidArgumentError

__all__ = ["PannsPredictor"]


class PannsPredictor:
    """Tag batches of audio: a callable class for ``ray.data.Dataset.map_batches``.

    The model is loaded once per actor, in ``__init__``. ``device="auto"`` picks CUDA when the
    actor has a GPU: Ray gives an actor started with ``num_gpus=1`` its GPU in
    ``CUDA_VISIBLE_DEVICES`` and hides the GPUs from actors without one.

    A batch is a dict of numpy arrays (Ray's default and ``"numpy"`` formats) or a pandas
    DataFrame (``batch_format="pandas"``). It holds either or both of these columns:

    * ``bytes``: encoded audio files (what ``ray.data.read_binary_files`` gives), decoded
      in memory as files are (libsndfile's formats, and through PyAV MP4/M4A, WebM/MKV, AAC,
      WMA and video soundtracks);
    * ``path``: paths of audio files readable where the actor runs, used when there is no
      ``bytes`` column (with ``bytes``, ``path`` is only passed through, so it may be a URI).

    The result is a dict of columns (a pandas DataFrame for a DataFrame batch), in the
    package's record vocabulary: ``path`` (when the batch has one), ``duration`` (seconds),
    ``sample_rate`` (the input's own rate), ``model`` (the checkpoint's registry name or file
    name; null for failed rows' duration and rate), ``labels`` (the top-k class names) and ``scores`` (their
    probabilities, float32), with ``embeddings=True`` also ``embedding`` (a float32 ``(N, D)``
    array, NaN rows for failed rows), and ``error`` (null, or why that row failed, naming the
    row's path when the batch has a ``path`` column). A null or non-string ``path`` (or a null
    ``bytes`` value) is that row's error, like an unreadable file; rows are matched by
    position, so a pandas batch may have any index. ``labels``,
    ``scores`` and ``error`` are typed Arrow arrays (``list<string>``, ``list<float>``,
    ``string``), so every block of a dataset has one schema and Parquet output reads back as
    one table even where a block's rows all failed or all passed; this needs pyarrow (which
    Ray Data installs). Rows are tagged as :meth:`AudioTagger.tag` and
    :meth:`AudioTagger.embed` would tag them (see :func:`panns_infer.corpus.tag_corpus`);
    encoded audio longer than the window is resampled whole rather than streamed, which
    differs from tagging the file by float rounding only.

    Args:
        checkpoint: a registry name, checkpoint file or URL, as for :class:`AudioTagger`.
        top_k: labels per row.
        embeddings: add the ``embedding`` column.
        device: ``"auto"`` (the actor's GPU if it has one), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        labels: a label CSV or list of names (default: the AudioSet list from the cache).
        batch_size: clips per forward pass inside the actor.
        workers: threads decoding ahead of the network in each actor.
        on_error: ``"record"`` (default) fills ``error`` and goes on; ``"raise"`` fails the
            batch (and so the Ray task) at the first bad row.
        **options: other :class:`AudioTagger` options (``window``, ``precision``, ``offline``...).

    Example:
        >>> predictor = PannsPredictor("Cnn14", top_k=3)                    # doctest: +SKIP
        >>> out = predictor({"path": np.array(["dog.flac"])})              # doctest: +SKIP
        >>> out["labels"].to_pylist(), out["error"].to_pylist()              # doctest: +SKIP
        ([['Dog', 'Animal', 'Domestic animals, pets']], [None])
    """

    def __init__(self, checkpoint: Union[str, "os.PathLike[str]"] = "Cnn14", *, top_k: int = 10,
                 embeddings: bool = False, device: str = "auto", labels: Any = None, batch_size: int = 8,
                 workers: int = 2, on_error: str = "record", **options: Any) -> None:
        from ..tagger import AudioTagger

        if on_error not in ("record", "raise"):
            raise InvalidArgumentError(f"on_error must be 'record' or 'raise', got {on_error!r}")
        self.tagger = AudioTagger(checkpoint, device=device, labels=labels, batch_size=batch_size, **options)
        self.top_k = top_k
        self.embeddings = embeddings
        self.workers = workers
        self.on_error = on_error
        self.model = (os.fspath(checkpoint) if not os.path.exists(os.fspath(checkpoint))
                      else os.path.basename(os.fspath(checkpoint)))
        _ = self.tagger.labels  # fail in the constructor, not in every batch

    def __repr__(self) -> str:
        return f"PannsPredictor({self.tagger!r}, top_k={self.top_k}, embeddings={self.embeddings})"

    def __call__(self, batch: Any) -> Any:
        """Tag one batch; see the class docstring for its columns."""
        from ..corpus import FileResult, tag_corpus

        pandas = hasattr(batch, "columns") and hasattr(batch, "to_dict")
        columns = list(batch.columns) if pandas else list(batch)
        paths = list(batch["path"]) if "path" in columns else None  # by position, whatever the index
        if "bytes" in columns:
            sources, problems = zip(*(_bytes_source(b) for b in batch["bytes"])) if len(batch["bytes"]) else ((), ())
        elif paths is not None:
            sources, problems = zip(*(_path_source(p) for p in paths)) if paths else ((), ())
        else:
            raise InvalidArgumentError(f"PannsPredictor needs a 'bytes' or 'path' column, got columns {columns}")
        usable = [s for s in sources if s is not None]
        tagged = iter([r for part in tag_corpus(self.tagger, usable, top_k=self.top_k,
                                                embeddings=self.embeddings, workers=self.workers) for r in part])
        results = [next(tagged) if s is not None else FileResult(None, error=why) for s, why in zip(sources, problems)]
        for i, r in enumerate(results):
            where = _row_name(paths[i]) if paths is not None else None
            if r.error is not None and where is not None and where not in r.error:
                r.error = f"{where}: {r.error}"  # the row's path, not the in-memory bytes
        if self.on_error == "raise":
            for i, r in enumerate(results):
                if not r.ok:
                    raise AudioDecodeError(r.error if paths is not None else f"row {i}: {r.error}")
        pa = _pyarrow()
        out: dict[str, Any] = {}
        if "path" in columns:
            out["path"] = np.asarray(batch["path"])
        # typed Arrow columns: a block whose rows all failed (or all passed) keeps the same
        # schema as the others, so the blocks of a dataset can be written to one Parquet folder
        out["duration"] = pa.array([r.duration if r.ok else None for r in results], pa.float64())
        out["sample_rate"] = pa.array([r.sample_rate if r.ok else None for r in results], pa.int64())
        out["model"] = pa.array([self.model] * len(results), pa.string())
        # a result without an error carries its tags, and its embedding when asked
        out["labels"] = pa.array([list(r.tags.labels) if r.ok else [] for r in results],  # type: ignore[union-attr]
                                 pa.list_(pa.string()))
        out["scores"] = pa.array([r.tags.scores.tolist() if r.ok else [] for r in results],  # type: ignore[union-attr]
                                 pa.list_(pa.float32()))
        if self.embeddings:
            # an int: tag_corpus refused embeddings from a model without them
            blank = np.full(cast(int, self.tagger.embedding_size), np.nan, dtype=np.float32)
            rows = [r.embedding.astype(np.float32) if r.ok else blank for r in results]  # type: ignore[union-attr]
            out["embedding"] = np.stack(rows) if rows else np.zeros((0, len(blank)), np.float32)
        out["error"] = pa.array([r.error for r in results], pa.string())
        if pandas:
            import pandas as pd

            frame = {k: (pd.Series(v, dtype=pd.ArrowDtype(v.type), index=batch.index) if isinstance(v, pa.Array)
                         else pd.Series(list(v), index=batch.index)) for k, v in out.items()}
            return pd.DataFrame(frame, index=batch.index)
        return out


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise ImportError("PannsPredictor builds Arrow columns and needs pyarrow: pip install 'panns-infer[ray]' "
                          "(or pip install pyarrow)") from None
    return pyarrow


def _is_null(value: Any) -> bool:
    """None, NaN, pandas' NA and NaT: what a missing cell holds in numpy, pandas and Arrow batches."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(value, (float, np.floating)) and bool(np.isnan(value))


def _row_name(value: Any) -> Optional[str]:
    """A path cell as text for messages, or ``None`` for a null or unusable cell."""
    if _is_null(value):
        return None
    try:
        return str(os.fsdecode(value))  # np.str_ would show as np.str_(...) in messages
    except TypeError:
        return None


def _path_source(value: Any) -> tuple[Optional[str], Optional[str]]:
    """``(path, None)`` for a usable ``path`` cell, ``(None, why not)`` otherwise."""
    if _is_null(value):
        return None, "the row's path is null; give every row a path (or a 'bytes' value)"
    name = _row_name(value)
    if name is None:
        return None, f"the row's path must be a string, got {type(value).__name__}"
    return name, None


def _bytes_source(value: Any) -> tuple[Optional[Union[bytes, bytearray, memoryview]], Optional[str]]:
    """``(encoded audio, None)`` for a usable ``bytes`` cell, ``(None, why not)`` otherwise."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value, None
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        return value.tobytes(), None
    if _is_null(value):
        return None, "the row's 'bytes' value is null; it must hold encoded audio"
    return None, f"the 'bytes' column must hold encoded audio as bytes, got {type(value).__name__}"
