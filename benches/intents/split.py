#!/usr/bin/env python3
"""Stratified, seeded split of a labelled CSV (BANKING77 layout: text,category) into
train/test files, with out-of-scope development utterances shared out between an
operator-supplied training half and a held-out test half. Standard library only."""
import argparse
import csv
import os
import random
from collections import defaultdict

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--oos", required=True, help="one out-of-scope utterance per line")
p.add_argument("--out", required=True)
p.add_argument("--test-share", type=float, default=0.2)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--text-column", default="text")
p.add_argument("--label-column", default="category")
a = p.parse_args()

rng = random.Random(a.seed)
by_label = defaultdict(list)
with open(a.data, newline="", encoding="utf-8") as f:
    for row in csv.DictReader(f):
        by_label[row[a.label_column]].append(row[a.text_column])
train, test = [], []
for label in sorted(by_label):
    texts = by_label[label][:]
    rng.shuffle(texts)
    k = max(1, round(len(texts) * a.test_share))
    test += [(t, label) for t in texts[:k]]
    train += [(t, label) for t in texts[k:]]
with open(a.oos, encoding="utf-8") as f:
    oos = [l.strip() for l in f if l.strip()]
rng.shuffle(oos)
half = len(oos) // 2
oos_train = [(t, "out_of_scope") for t in oos[:half]]
oos_test = [(t, "out_of_scope") for t in oos[half:]]

os.makedirs(a.out, exist_ok=True)


def write(name, rows):
    rows = rows[:]
    rng.shuffle(rows)
    with open(os.path.join(a.out, name), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "category"])
        w.writerows(rows)
    print(f"{name}: {len(rows)} rows")


write("train.csv", train)
write("test.csv", test)
write("train_oos.csv", train + oos_train)
write("test_oos.csv", test + oos_test)
