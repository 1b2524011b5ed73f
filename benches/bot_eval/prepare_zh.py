"""A Chinese bot benchmark from benches/similarity/pairs_zh.csv: every anchor question and
every hard negative (a question on the same topic asking something else) is a knowledge-base
article; each paraphrase of an anchor is an in-domain query that should get the anchor's
article, with the negatives competing; out-of-domain queries are the first customer turn
of CrossWOZ dialogues (travel: hotels, restaurants, sights), which a bank and hospital KB
cannot answer.

    python3 benches/bot_eval/prepare_zh.py --out DIR [--ood 200]

Writes DIR/kb.jsonl, DIR/queries.jsonl and DIR/ood.jsonl."""
import argparse
import csv
import json
import os
import sys
import zipfile


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--pairs", default="benches/similarity/pairs_zh.csv")
    p.add_argument("--crosswoz", default="../shared/data/crosswoz/val.json.zip")
    p.add_argument("--ood", type=int, default=200)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rows = list(csv.DictReader(open(a.pairs, encoding="utf-8")))
    ids = {}
    for r in rows:
        for q in [r["question_1"]] + ([r["question_2"]] if r["similar"] == "0" else []):
            ids.setdefault(q.strip(), f"zh-{len(ids):03d}")
    with open(os.path.join(a.out, "kb.jsonl"), "w", encoding="utf-8") as f:
        for q, art in ids.items():
            # The answer text is the question itself: what is measured is which question
            # a paraphrase finds, not how answers read.
            f.write(json.dumps({"id": art, "lang": "zh", "questions": [q], "answer": q}, ensure_ascii=False) + "\n")
    n = 0
    with open(os.path.join(a.out, "queries.jsonl"), "w", encoding="utf-8") as f:
        for r in rows:
            if r["similar"] == "1":
                f.write(json.dumps({"query": r["question_2"].strip(), "expected": [ids[r["question_1"].strip()]]}, ensure_ascii=False) + "\n")
                n += 1
    z = zipfile.ZipFile(a.crosswoz)
    name = next(x for x in z.namelist() if x.endswith(".json"))
    dialogues = json.load(z.open(name))
    m = 0
    with open(os.path.join(a.out, "ood.jsonl"), "w", encoding="utf-8") as f:
        for d in dialogues.values():
            turn = next((t["content"] for t in d["messages"] if t["role"] == "usr"), "")
            if turn.strip() and m < a.ood:
                f.write(json.dumps({"query": turn.strip(), "expected": []}, ensure_ascii=False) + "\n")
                m += 1
    print(f"zh: {len(ids)} articles, {n} paraphrase queries, {m} out-of-domain (CrossWOZ)", file=sys.stderr)


if __name__ == "__main__":
    main()
