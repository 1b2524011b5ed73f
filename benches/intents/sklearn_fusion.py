#!/usr/bin/env python3
"""The lexical head's ceiling, checked with scikit-learn on the same split and vectors.

Logistic regression on the cached all-MiniLM-L6-v2 vectors (written by `intent-heads`
beside the CSVs), on TF-IDF word 1-2-grams + character 2-5-grams (the lexical head's
features), and the two averaged. Needs `pip install scikit-learn`.

    python3 benches/intents/sklearn_fusion.py target/bench-intents
"""
import csv
import sys

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

work = sys.argv[1] if len(sys.argv) > 1 else "target/bench-intents"


def load(name):
    rows = list(csv.DictReader(open(f"{work}/{name}.csv")))
    vectors = np.fromfile(f"{work}/{name}.all-MiniLM-L6-v2.f32", dtype="<f4").reshape(len(rows), -1)
    return [r["text"] for r in rows], np.array([r["category"] for r in rows]), vectors


xtr, ytr, etr = load("train")
xte, yte, ete = load("test")
words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
a = hstack([words.fit_transform(xtr), chars.fit_transform(xtr)]).tocsr()
b = hstack([words.transform(xte), chars.transform(xte)]).tocsr()
lex = LogisticRegression(C=30, max_iter=300).fit(a, ytr)
vec = LogisticRegression(C=10, max_iter=1000).fit(etr, ytr)
pl, pv = lex.predict_proba(b), vec.predict_proba(ete)
acc = lambda p: (vec.classes_[p.argmax(1)] == yte).mean() * 100
print(f"vectors {acc(pv):.2f}%  tf-idf {acc(pl):.2f}%")
for w in (0.3, 0.5, 0.7):
    fused = w * np.log(pv + 1e-9) + (1 - w) * np.log(pl + 1e-9)
    print(f"log-probabilities averaged, vector weight {w}: {acc(fused):.2f}%")
