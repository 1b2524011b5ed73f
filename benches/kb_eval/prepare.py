#!/usr/bin/env python3
"""Turns the retrieval data sets in ../shared/data into what `confidantctl kb import`
and `confidantctl kb eval` read. Nothing here is committed output: run it, then run.sh.

covid:   the 213 COVID-QA FAQ pairs as articles (question variant + answer); queries are
         the 244 labelled paraphrases (similar=1) of those questions.
medquad: MedQuAD answers as articles WITHOUT their questions (question -> its answer
         among all answers); every --stride-th pair, for a run that fits the machine.
         Identical answers shared by several questions all count as correct.
"""
import argparse
import csv
import hashlib
import json
import os
import sys


def covid(data, out):
    rows = list(csv.DictReader(open(os.path.join(data, "covid_qa/faq_covidbert.csv"), encoding="utf-8")))
    ids = {}
    with open(os.path.join(out, "covid-kb.jsonl"), "w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            q = r["question"].strip()
            art = f"covid-{i:03d}"
            ids.setdefault(q, []).append(art)
            f.write(json.dumps({"id": art, "lang": "en", "questions": [q], "answer": r["answer"].strip()}, ensure_ascii=False) + "\n")
    n = 0
    with open(os.path.join(out, "covid-queries.jsonl"), "w", encoding="utf-8") as f:
        for r in csv.DictReader(open(os.path.join(data, "covid_qa/eval_question_similarity_en.csv"), encoding="utf-8")):
            if r["similar"] != "1" or r["question_1"].strip() not in ids:
                continue
            f.write(json.dumps({"query": r["question_2"].strip(), "expected": ids[r["question_1"].strip()]}) + "\n")
            n += 1
    print(f"covid: {len(rows)} articles, {n} queries", file=sys.stderr)


def medquad(data, out, stride):
    pairs = [json.loads(l) for l in open(os.path.join(data, "medquad/medquad_answered.jsonl"), encoding="utf-8")]
    pairs = pairs[::stride]
    by_answer = {}
    with open(os.path.join(out, "medquad-kb.jsonl"), "w", encoding="utf-8") as f:
        for p in pairs:
            a = p["answer"].strip()
            key = hashlib.sha256(a.encode()).hexdigest()[:16]
            if key in by_answer:
                continue
            by_answer[key] = f"mq-{key}"
            f.write(json.dumps({"id": f"mq-{key}", "lang": "en", "answer": a[:20000]}, ensure_ascii=False) + "\n")
    with open(os.path.join(out, "medquad-queries.jsonl"), "w", encoding="utf-8") as f:
        for p in pairs:
            key = hashlib.sha256(p["answer"].strip().encode()).hexdigest()[:16]
            f.write(json.dumps({"query": p["question"].strip(), "expected": [f"mq-{key}"]}) + "\n")
    print(f"medquad: {len(by_answer)} articles, {len(pairs)} queries (every {stride}th pair)", file=sys.stderr)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../../shared/data"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--medquad-stride", type=int, default=8)
    a = ap.parse_args()
    if not os.path.isdir(a.data):
        sys.exit(f"prepare.py: {a.data} not found (the shared data sets are needed)")
    os.makedirs(a.out, exist_ok=True)
    covid(a.data, a.out)
    medquad(a.data, a.out, a.medquad_stride)
