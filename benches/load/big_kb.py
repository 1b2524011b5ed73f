#!/usr/bin/env python3
"""A large knowledge base for the load benchmark, from real text in ../shared/data.

MedQuAD's 16,407 question/answer pairs become articles (the question as a question
variant, the focus as title, the answer's first sentences as the answer), and
BANKING77's 10,003 customer utterances become one article per five utterances of an
intent. With `kb.chunk_tokens = 32` (run.sh sets it for BIG_KB=1) and answers cut at
360 characters that is about 100k chunks (every question variant, title and passage is a
point in the index; `confidantctl kb stats` prints the count) and ~2.2M tokens to embed.

    big_kb.py --shared ../shared --answer-chars 360 --out kb.jsonl
"""

import argparse
import csv
import json
import re
from collections import defaultdict
from pathlib import Path


def first_sentences(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= limit:
        return text
    cut = text.rfind(". ", 0, limit)
    return text[: cut + 1] if cut > limit // 3 else text[:limit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--answer-chars", type=int, default=360)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    n = 0
    with a.out.open("w", encoding="utf-8") as out:
        medquad = a.shared / "data/medquad/medquad_answered.jsonl"
        for i, line in enumerate(medquad.open(encoding="utf-8")):
            row = json.loads(line)
            answer = first_sentences(row["answer"], a.answer_chars)
            if not answer:
                continue
            # qids repeat across MedQuAD's sources: the line number keeps articles apart.
            out.write(json.dumps({
                "id": f"mq-{i}", "lang": "en", "title": row.get("focus", "")[:200],
                "questions": [row["question"][:500]], "answer": answer, "tags": ["medquad"],
            }) + "\n")
            n += 1
        by_intent = defaultdict(list)
        with (a.shared / "data/banking77/train.csv").open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                by_intent[row["category"]].append(row["text"].strip())
        for intent, texts in sorted(by_intent.items()):
            for i in range(0, len(texts), 5):
                qs = [t for t in texts[i : i + 5] if t]
                if not qs:
                    continue
                slug = re.sub(r"[^A-Za-z0-9_-]", "", intent)
                out.write(json.dumps({
                    "id": f"b77-{slug}-{i // 5}", "lang": "en",
                    "title": intent.replace("_", " ").capitalize(), "questions": qs,
                    "answer": f"For {intent.replace('_', ' ')}, open the app's Help section or call us: "
                              "an agent will take you through it.",
                    "tags": ["banking77"],
                }) + "\n")
                n += 1
    print(f"big_kb.py: {n} articles -> {a.out}")


if __name__ == "__main__":
    main()
