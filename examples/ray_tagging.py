"""Tag a folder (or bucket) of audio with Ray Data, one model per actor, and write Parquet.

    pip install 'panns-infer[ray]'                       # ray[data] (with pyarrow)
    python examples/ray_tagging.py ~/field_recordings out/ --actors 2
    python examples/ray_tagging.py s3://bucket/audio/ out/ --actors 4 --gpus-per-actor 1 --embeddings

Each actor loads the checkpoint once (on its GPU with --gpus-per-actor 1) and tags the
batches Ray gives it; files are read by Ray as bytes, so any source Ray Data reads works
(local folders, S3, GCS, ...). A file that cannot be decoded gets an ``error`` and empty
labels instead of failing the job. Read the result with pandas:
``pandas.read_parquet("out/")``.
"""

from __future__ import annotations

import argparse

from panns_infer.corpus import AUDIO_EXTENSIONS
from panns_infer.integrations.ray import PannsPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a folder, file, glob or URI that ray.data.read_binary_files reads")
    parser.add_argument("output", help="a folder for the Parquet files")
    parser.add_argument("--checkpoint", default="Cnn14")
    parser.add_argument("--labels", default=None, help="label CSV (default: the AudioSet list from the cache)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--embeddings", action="store_true", help="add an embedding column")
    parser.add_argument("--actors", type=int, default=2, help="model replicas (default: 2)")
    parser.add_argument("--gpus-per-actor", type=float, default=0, help="1 to give each actor a GPU")
    parser.add_argument("--batch-size", type=int, default=32, help="files per batch (default: 32)")
    args = parser.parse_args()

    import ray  # imported here so that --help works without Ray

    ray.init()
    ds = ray.data.read_binary_files(args.source, include_paths=True, file_extensions=sorted(AUDIO_EXTENSIONS))
    tagged = ds.map_batches(
        PannsPredictor,
        fn_constructor_kwargs={"checkpoint": args.checkpoint, "labels": args.labels, "top_k": args.top_k,
                               "embeddings": args.embeddings},
        compute=ray.data.ActorPoolStrategy(size=args.actors),  # older Ray: concurrency=args.actors
        num_gpus=args.gpus_per_actor,
        batch_size=args.batch_size,
    )
    tagged.write_parquet(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
