"""Ray Data: PannsPredictor called on plain batches (no Ray needed), and inside map_batches on
a local Ray instance (needs ``pip install 'ray[data]'``; skipped without it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import requires_fixtures
from panns_infer.errors import AudioDecodeError, InvalidArgumentError
from panns_infer.integrations.ray import PannsPredictor

# seconds, rate, channels, extension: short clips of several formats and rates, and one longer
# than the 10 s window (which runs as windows: window=10.0, whole_up_to=0 throughout)
CLIPS = [(1.0, 32000, 1, "wav"), (1.0, 32000, 2, "wav"), (2.2, 44100, 1, "flac"), (1.3, 16000, 2, "ogg"),
         (0.4, 48000, 1, "flac"), (10.6, 22050, 1, "ogg"), (3.0, 32000, 1, "wav")]


def _corpus(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (seconds, rate, channels, ext) in enumerate(CLIPS):
        rng = np.random.default_rng(i)
        x = rng.standard_normal((int(seconds * rate), channels)) * 0.1
        x[:, 0] += 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * np.arange(len(x)) / rate)
        path = folder / f"clip{i}.{ext}"
        soundfile.write(path, x.astype(np.float32), rate)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def setup(fixture_checkpoint, labels_csv, tmp_path_factory):
    from panns_infer import AudioTagger

    ckpt = str(fixture_checkpoint("Cnn6"))
    files = _corpus(tmp_path_factory.mktemp("ray_corpus"))
    tagger = AudioTagger(ckpt, labels=labels_csv, device="cpu", window=10.0, whole_up_to=0)
    expected = {p: (tagger.tag(p, top_k=4), tagger.embed(p)) for p in files}
    return {"checkpoint": ckpt, "labels": str(labels_csv), "files": files, "expected": expected}


def _values(column) -> list:
    return column.to_pylist() if hasattr(column, "to_pylist") else list(column)


def _check(paths, labels, scores, embeddings, expected) -> None:
    for path, lab, sc, emb in zip(paths, _values(labels), _values(scores), embeddings):
        tags, vec = expected[path]
        assert list(lab) == tags.labels
        np.testing.assert_allclose(np.asarray(sc), tags.scores, rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(emb), vec, rtol=0, atol=1e-5 * np.abs(vec).max())


NEEDS_ARROW = "PannsPredictor builds Arrow columns: pip install 'panns-infer[ray]' (or pyarrow) to test it"


@requires_fixtures
def test_paths_bytes_and_pandas_batches_equal_the_tagger(setup, tmp_path):
    pytest.importorskip("pyarrow", reason=NEEDS_ARROW)
    pd = pytest.importorskip("pandas", reason="the pandas batch format needs pandas")
    files = setup["files"]
    predictor = PannsPredictor(setup["checkpoint"], labels=setup["labels"], device="auto", top_k=4, window=10.0,
                               whole_up_to=0, embeddings=True)
    assert predictor.tagger.device.type in ("cpu", "cuda")

    out = predictor({"path": np.array(files)})
    assert set(out) == {"path", "duration", "sample_rate", "model", "labels", "scores", "embedding", "error"}
    durations = [soundfile.info(p).duration for p in files]
    np.testing.assert_allclose(out["duration"].to_pylist(), durations, atol=1e-3)
    assert out["sample_rate"].to_pylist() == [soundfile.info(p).samplerate for p in files]
    assert out["model"].to_pylist() == [os.path.basename(setup["checkpoint"])] * len(files)
    assert out["embedding"].shape == (len(files), 512) and out["embedding"].dtype == np.float32
    assert out["error"].to_pylist() == [None] * len(files)
    _check(out["path"], out["labels"], out["scores"], out["embedding"], setup["expected"])

    blobs = np.empty(len(files), dtype=object)
    blobs[:] = [Path(p).read_bytes() for p in files]
    out = predictor({"bytes": blobs, "path": np.array(files)})  # bytes are decoded, paths passed through
    _check(out["path"], out["labels"], out["scores"], out["embedding"], setup["expected"])

    frame = predictor(pd.DataFrame({"path": files}, index=range(10, 10 + len(files))))
    assert list(frame.columns) == ["path", "duration", "sample_rate", "model", "labels", "scores", "embedding",
                                   "error"]
    assert list(frame.index) == list(range(10, 10 + len(files)))
    _check(frame["path"], frame["labels"], frame["scores"], frame["embedding"], setup["expected"])


@requires_fixtures
def test_bad_rows_are_recorded_or_raised(setup, tmp_path):
    pytest.importorskip("pyarrow", reason=NEEDS_ARROW)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    files = [setup["files"][0], str(bad)]
    predictor = PannsPredictor(setup["checkpoint"], labels=setup["labels"], device="cpu", top_k=4, window=10.0,
                               whole_up_to=0)
    out = predictor({"path": np.array(files)})
    errors = out["error"].to_pylist()
    assert errors[0] is None and "bad.wav" in errors[1]
    assert out["labels"].to_pylist()[1] == [] and out["scores"].to_pylist()[1] == [] and "embedding" not in out
    assert str(out["labels"].type) == "list<item: string>" and str(out["error"].type) == "string"
    blobs = np.empty(2, dtype=object)
    blobs[:] = [b"RIFF garbage", b""]
    all_bad = predictor({"bytes": blobs})  # a batch with no good row keeps the column types
    assert all("cannot decode" in e for e in all_bad["error"].to_pylist())
    assert str(all_bad["labels"].type) == "list<item: string>" and str(all_bad["scores"].type) == "list<item: float>"

    strict = PannsPredictor(setup["checkpoint"], labels=setup["labels"], device="cpu", on_error="raise")
    with pytest.raises(AudioDecodeError, match="bad.wav"):
        strict({"path": np.array(files)})
    with pytest.raises(InvalidArgumentError, match="'bytes' or 'path' column"):
        strict({"audio": np.array(files)})
    with pytest.raises(InvalidArgumentError, match="on_error"):
        PannsPredictor(setup["checkpoint"], labels=setup["labels"], device="cpu", on_error="ignore")


@pytest.mark.slow
@requires_fixtures
def test_map_batches_on_a_local_ray_instance(setup, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'panns-infer[ray]' "
                                            "(ray[data]) to run the Ray Data test")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'ray[data]'")
    pq = pytest.importorskip("pyarrow.parquet", reason="Ray Data needs pyarrow: pip install 'ray[data]'")
    folder = Path(setup["files"][0]).parent
    (folder / "broken.wav").write_text("not audio")  # an error row, in a block of its own or not
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        kwargs = {"checkpoint": setup["checkpoint"], "labels": setup["labels"], "top_k": 4, "embeddings": True,
                  "window": 10.0, "whole_up_to": 0}
        ds = ray.data.read_binary_files(str(folder), include_paths=True)
        out = ds.map_batches(PannsPredictor, fn_constructor_kwargs=kwargs, batch_size=3,
                             compute=ray.data.ActorPoolStrategy(size=1))
        out.write_parquet(str(tmp_path / "parquet"))
        rows = {Path(r["path"]).name: r for r in out.take_all()}
        assert set(rows) == {Path(p).name for p in setup["files"]} | {"broken.wav"}
        assert "cannot decode" in rows.pop("broken.wav")["error"]
        ordered = [rows[Path(p).name] for p in setup["files"]]
        assert all(r["error"] is None for r in ordered)
        _check(setup["files"], [r["labels"] for r in ordered], [r["scores"] for r in ordered],
               [r["embedding"] for r in ordered], setup["expected"])
        table = pq.read_table(str(tmp_path / "parquet"))
        assert table.num_rows == len(setup["files"]) + 1
        assert {"path", "labels", "scores", "embedding", "error"} <= set(table.column_names)

        paths = ray.data.from_items([{"path": p} for p in setup["files"]])  # paths only, pandas batches
        frame = paths.map_batches(PannsPredictor, fn_constructor_kwargs=kwargs, batch_size=4, batch_format="pandas",
                                  compute=ray.data.ActorPoolStrategy(size=1)).to_pandas()
        frame = frame.set_index("path").loc[setup["files"]]
        _check(setup["files"], frame["labels"], frame["scores"], frame["embedding"], setup["expected"])
    finally:
        ray.shutdown()


@requires_fixtures
def test_errors_name_the_row_and_null_paths_are_row_errors(setup, tmp_path):
    pytest.importorskip("pyarrow", reason=NEEDS_ARROW)
    pd = pytest.importorskip("pandas", reason="the pandas batch format needs pandas")
    good = setup["files"][0]
    predictor = PannsPredictor(setup["checkpoint"], labels=setup["labels"], device="cpu", top_k=4, whole_up_to=0)
    blobs = np.empty(2, dtype=object)
    blobs[:] = [Path(good).read_bytes(), b"RIFF garbage"]
    out = predictor({"bytes": blobs, "path": np.array([good, "s3://bucket/broken.wav"])})
    first, second = out["error"].to_pylist()
    assert first is None and second.startswith("s3://bucket/broken.wav: cannot decode")
    assert "BytesIO" not in second and "0x" not in second

    paths = np.array([good, None, float("nan"), 7, good], dtype=object)
    errors = predictor({"path": paths})["error"].to_pylist()
    assert errors[0] is None and errors[4] is None
    assert "null" in errors[1] and "null" in errors[2] and "must be a string" in errors[3]
    frame = predictor(pd.DataFrame({"path": [None, good]}, index=[40, 7]))
    assert list(frame.index) == [40, 7] and pd.isna(frame["error"].iloc[1]) and "null" in frame["error"].iloc[0]

    strict = PannsPredictor(setup["checkpoint"], labels=setup["labels"], device="cpu", on_error="raise")
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(AudioDecodeError, match="bad.wav"):           # not a KeyError on index 1
        strict(pd.DataFrame({"path": [good, str(bad)]}, index=[10, 11]))
    with pytest.raises(AudioDecodeError, match="null"):
        strict({"path": np.array([None], dtype=object)})


@requires_fixtures
def test_ray_rows_equal_the_cli_records(setup, tmp_path, capsys):
    """The same files, options and errors give the same labels, scores and errors in both."""
    import json

    pytest.importorskip("pyarrow", reason=NEEDS_ARROW)
    from panns_infer.cli import main

    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    files = setup["files"][:4] + [str(bad), str(tmp_path / "missing.flac")]
    out = tmp_path / "tags.jsonl"
    assert main([*files, "-c", setup["checkpoint"], "--labels", setup["labels"], "-k", "4", "--whole-up-to", "0",
                 "--device", "cpu", "--output", str(out), "--no-progress"]) == 1
    capsys.readouterr()
    records = {r["path"]: r for r in map(json.loads, out.read_text().splitlines()[1:])}  # after the header
    predictor = PannsPredictor(setup["checkpoint"], labels=setup["labels"], device="cpu", top_k=4, whole_up_to=0)
    rows = predictor({"path": np.array(files)})
    for path, labels, scores, error in zip(files, rows["labels"].to_pylist(), rows["scores"].to_pylist(),
                                           rows["error"].to_pylist()):
        record = records[path]
        assert error == record.get("error")
        if error is None:
            assert labels == record["labels"]
            np.testing.assert_allclose(scores, record["scores"], rtol=0, atol=1e-5)
        else:
            assert path in error
