"""Sends every query through the daemon's BotService/Answer (confidantctl bot answer, a
new conversation per query) and prints one JSON line: outcome shares for in-domain
queries (right answer, wrong answer, choices including the right article, hand-off) and
the share of out-of-domain queries that got an answer anyway."""
import argparse
import json
import subprocess
import sys


def ask(ctl, tenant, conv, text):
    out = subprocess.run(ctl + ["--json", "bot", "--tenant", tenant, "answer", "--conversation", conv, text],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"confidantctl failed on {text!r}: {out.stderr}")
    return json.loads(out.stdout)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--min-score", required=True)
    p.add_argument("--min-margin", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--in-domain", required=True)
    p.add_argument("--out-of-domain", required=True)
    p.add_argument("ctl", nargs="+")
    a = p.parse_args()
    ctl = [c for c in a.ctl if c != "--"]
    res = {"min_score": float(a.min_score), "min_margin": float(a.min_margin)}
    ind = [json.loads(l) for l in open(a.in_domain, encoding="utf-8")]
    n = {"right": 0, "wrong": 0, "clarify_right": 0, "clarify_wrong": 0, "no_match": 0, "handoff": 0}
    for i, q in enumerate(ind):
        r = ask(ctl, a.tenant, f"in-{a.min_score}-{a.min_margin}-{i}", q["query"])
        o = r["outcome"]
        if o == "answer":
            n["right" if r["answer"]["article_id"] in q["expected"] else "wrong"] += 1
        elif o == "clarify":
            hit = any(c["article_id"] in q["expected"] for c in r["choices"])
            n["clarify_right" if hit else "clarify_wrong"] += 1
        else:
            n[o] += 1
    res["in_domain"] = {k: round(v / len(ind), 3) for k, v in n.items()}
    res["in_domain_queries"] = len(ind)
    answered = n["right"] + n["wrong"]
    res["answer_precision"] = round(n["right"] / answered, 3) if answered else None
    ood = [json.loads(l) for l in open(a.out_of_domain, encoding="utf-8")]
    m = {"answer": 0, "clarify": 0, "no_match": 0, "handoff": 0}
    for i, q in enumerate(ood):
        m[ask(ctl, a.tenant, f"ood-{a.min_score}-{a.min_margin}-{i}", q["query"])["outcome"]] += 1
    res["out_of_domain"] = {k: round(v / len(ood), 3) for k, v in m.items()}
    res["out_of_domain_queries"] = len(ood)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    sys.exit(main())
