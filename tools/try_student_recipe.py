"""Train one chapter 14 student with a changed recipe and print its validation and test accuracy.

How the students' recipes (`dlbook.distill.STUDENT_SETTINGS["full"]`) were chosen: each candidate
trained once, compared on the validation split (the test accuracy is printed too, for the record;
do not choose on it). Nothing is cached. Example, from the repository root:

    source tools/offline_env.sh
    .venv/bin/python tools/try_student_recipe.py narrow kd '{"epochs": 3, "embeddings": "project"}'

Arguments: the kind (`layers` or `narrow`), `kd` (distilled) or `ce` (labels only), and a JSON
object of `StudentSettings` fields to change.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from dlbook import assets, distill, finetune, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=distill.KINDS)
    parser.add_argument("loss", choices=("kd", "ce"))
    parser.add_argument("changes", nargs="?", default="{}", help="JSON object of StudentSettings fields")
    args = parser.parse_args()
    device = setup(seed=0)
    settings = dataclasses.replace(distill.STUDENT_SETTINGS["full"][args.kind], **json.loads(args.changes))
    student, tokenizer, info = distill.train_new_student(
        "full", args.kind, args.loss == "kd", device, settings, show_progress=False
    )
    reviews = assets.rotten_tomatoes()
    acc = {
        split: finetune.evaluate_classifier(
            student, finetune.tokenize_dataset(reviews[split], tokenizer, 128), tokenizer, device=device
        ).accuracy
        for split in ("validation", "test")
    }
    print(
        f"{args.kind} {args.loss} {args.changes}: trained in {info['history']['seconds']:.0f} s | "
        f"validation {acc['validation']:.4f} | test {acc['test']:.4f}"
    )


if __name__ == "__main__":
    main()
