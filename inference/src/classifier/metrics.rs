//! Evaluation figures shared by training (the held-out report) and `intents eval`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One example's truth and the classifier's answer. `None` means out of scope.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub truth: Option<String>,
    /// The best in-scope label, whatever the out-of-scope decision.
    pub top: String,
    pub out_of_scope: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabelFigures {
    pub label: String,
    pub support: usize,
    pub precision: f32,
    pub recall: f32,
    pub f1: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Confusion {
    pub truth: String,
    pub predicted: String,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Report {
    pub examples: usize,
    pub in_scope_examples: usize,
    pub out_of_scope_examples: usize,
    /// In-scope examples whose top label is right, ignoring the out-of-scope decision.
    pub closed_set_accuracy: f32,
    /// In-scope examples answered with the right label (a rejected one counts as wrong).
    pub in_scope_accuracy: f32,
    /// Macro-averaged F1 over the in-scope labels (rejections count as misses).
    pub macro_f1: f32,
    /// Of the inputs flagged out of scope, the share that were (None without such data).
    pub oos_precision: Option<f32>,
    /// Of the out-of-scope inputs, the share flagged (None without such data).
    pub oos_recall: Option<f32>,
    /// The in-scope labels with the lowest F1, worst first.
    pub worst: Vec<LabelFigures>,
    /// The most frequent (truth, predicted) mistakes among in-scope labels.
    pub confused: Vec<Confusion>,
}

fn ratio(a: usize, b: usize) -> f32 {
    if b == 0 { 0.0 } else { a as f32 / b as f32 }
}

pub fn report(outcomes: &[Outcome], worst: usize) -> Report {
    let oos_name = "(out of scope)";
    let answer = |o: &Outcome| -> String {
        if o.out_of_scope {
            oos_name.to_string()
        } else {
            o.top.clone()
        }
    };
    let in_scope: Vec<&Outcome> = outcomes.iter().filter(|o| o.truth.is_some()).collect();
    let oos_total = outcomes.len() - in_scope.len();
    let closed = in_scope
        .iter()
        .filter(|o| o.truth.as_deref() == Some(o.top.as_str()))
        .count();
    let right = in_scope
        .iter()
        .filter(|o| !o.out_of_scope && o.truth.as_deref() == Some(o.top.as_str()))
        .count();
    let flagged = outcomes.iter().filter(|o| o.out_of_scope).count();
    let flagged_right = outcomes
        .iter()
        .filter(|o| o.out_of_scope && o.truth.is_none())
        .count();

    // Per label: tp, predicted, support.
    let mut counts: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut confusions: BTreeMap<(String, String), usize> = BTreeMap::new();
    for o in outcomes {
        let got = answer(o);
        if let Some(t) = &o.truth {
            counts.entry(t.clone()).or_default().2 += 1;
            if &got == t {
                counts.entry(t.clone()).or_default().0 += 1;
            } else {
                *confusions.entry((t.clone(), got.clone())).or_default() += 1;
            }
        }
        if !o.out_of_scope {
            counts.entry(got).or_default().1 += 1;
        }
    }
    let mut labels: Vec<LabelFigures> = counts
        .into_iter()
        .filter(|(_, (_, _, support))| *support > 0)
        .map(|(label, (tp, predicted, support))| {
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            LabelFigures {
                label,
                support,
                precision,
                recall,
                f1,
            }
        })
        .collect();
    let macro_f1 = if labels.is_empty() {
        0.0
    } else {
        labels.iter().map(|l| l.f1).sum::<f32>() / labels.len() as f32
    };
    labels.sort_by(|a, b| a.f1.total_cmp(&b.f1).then_with(|| a.label.cmp(&b.label)));
    labels.truncate(worst);
    let mut confused: Vec<Confusion> = confusions
        .into_iter()
        .map(|((truth, predicted), count)| Confusion {
            truth,
            predicted,
            count,
        })
        .collect();
    confused.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.truth.cmp(&b.truth)));
    confused.truncate(worst);
    Report {
        examples: outcomes.len(),
        in_scope_examples: in_scope.len(),
        out_of_scope_examples: oos_total,
        closed_set_accuracy: ratio(closed, in_scope.len()),
        in_scope_accuracy: ratio(right, in_scope.len()),
        macro_f1,
        oos_precision: (oos_total > 0).then(|| ratio(flagged_right, flagged)),
        oos_recall: (oos_total > 0).then(|| ratio(flagged_right, oos_total)),
        worst: labels,
        confused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(truth: Option<&str>, top: &str, oos: bool) -> Outcome {
        Outcome {
            truth: truth.map(str::to_string),
            top: top.to_string(),
            out_of_scope: oos,
        }
    }

    #[test]
    fn figures_on_a_small_example() {
        let r = report(
            &[
                o(Some("a"), "a", false),
                o(Some("a"), "b", false),
                o(Some("b"), "b", false),
                o(Some("b"), "b", true),
                o(None, "a", true),
                o(None, "a", false),
            ],
            5,
        );
        assert_eq!(r.in_scope_examples, 4);
        assert_eq!(r.out_of_scope_examples, 2);
        assert!((r.closed_set_accuracy - 0.75).abs() < 1e-6);
        assert!((r.in_scope_accuracy - 0.5).abs() < 1e-6);
        assert_eq!(r.oos_recall, Some(0.5));
        assert_eq!(r.oos_precision, Some(0.5));
        // a: tp 1, predicted 2 (a, and the missed oos), support 2 → p .5 r .5
        // b: tp 1, predicted 2, support 2
        assert!((r.macro_f1 - 0.5).abs() < 1e-6);
        assert_eq!(r.confused.len(), 2);
        assert!(report(&[], 3).oos_recall.is_none());
    }
}
