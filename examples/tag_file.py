"""Tag one audio file, print its top labels, and show where sounds happen.

    python examples/tag_file.py recording.wav                    # downloads Cnn14 once
    python examples/tag_file.py recording.wav --checkpoint my.pth --labels class_labels_indices.csv
"""

from __future__ import annotations

import argparse

from panns_infer import AudioTagger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio")
    parser.add_argument("--checkpoint", default="Cnn14")
    parser.add_argument("--labels", default=None)
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()

    tagger = AudioTagger(args.checkpoint, labels=args.labels)
    tags = tagger.tag(args.audio, top_k=args.top_k)
    for label, score in zip(tags.labels, tags.scores):
        print(f"{score:.3f}  {label}")
    if tagger.embedding_size:
        print("embedding:", tagger.embed(args.audio).shape)
    else:  # a decision-level checkpoint: when is the top class active?
        fw = tagger.framewise(args.audio)
        column = fw.labels.index(tags.labels[0])
        active = fw.times[fw.probabilities[:, column] > 0.5]
        span = f"{active[0]:.2f}-{active[-1]:.2f} s" if len(active) else "nowhere above 0.5"
        print(f"{tags.labels[0]}: {span}")


if __name__ == "__main__":
    main()
