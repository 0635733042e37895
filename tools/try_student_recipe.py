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
    teacher, tokenizer, _ = finetune.sentiment_classifier("full", device=device)
    s = dataclasses.replace(distill.STUDENT_SETTINGS["full"][args.kind], **json.loads(args.changes))
    train, targets = distill.student_training_data("full", s, teacher, tokenizer, device, args.loss == "kd")
    student = distill.set_embedding_mode(distill.build_student(args.kind, teacher, s), s.embeddings, teacher)
    history = distill.train_student(
        student, train, tokenizer, teacher_logits=targets, temperature=s.temperature, alpha=s.alpha, epochs=s.epochs,
        batch_size=s.batch_size, lr=s.lr, seed=s.seed, group_by_length=s.group_by_length, device=device,
        show_progress=False,
    )
    distill.fold_embeddings(student)
    reviews = assets.rotten_tomatoes()
    acc = {split: finetune.evaluate_classifier(student, finetune.tokenize_dataset(reviews[split], tokenizer, 128),
                                               tokenizer, device=device).accuracy
           for split in ("validation", "test")}
    print(f"{args.kind} {args.loss} {args.changes}: trained in {history.seconds:.0f} s | "
          f"validation {acc['validation']:.4f} | test {acc['test']:.4f}")


if __name__ == "__main__":
    main()
