//! Calibration on the held-out split: a softmax temperature (so that probabilities mean
//! what they say) and the out-of-scope threshold.

use serde::{Deserialize, Serialize};

/// What the out-of-scope threshold is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OosScore {
    /// The highest calibrated in-scope probability.
    MaxProb,
    /// Cosine similarity to the nearest training utterance: an input unlike anything the
    /// intents were trained on is out of scope however confident the softmax is.
    #[default]
    Nearest,
}

impl std::str::FromStr for OosScore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "max-prob" => Ok(Self::MaxProb),
            "nearest" => Ok(Self::Nearest),
            _ => Err(format!("unknown score {s:?}: expected max-prob or nearest")),
        }
    }
}

pub(crate) fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = temperature.max(1e-3);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| ((l - max) / t).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn nll(logits: &[Vec<f32>], y: &[u32], t: f32) -> f64 {
    logits
        .iter()
        .zip(y)
        .map(|(l, &c)| {
            let p = softmax(l, t).get(c as usize).copied().unwrap_or(0.0);
            -(f64::from(p).max(1e-12)).ln()
        })
        .sum::<f64>()
}

/// The temperature minimising the held-out negative log-likelihood, searched on a
/// log-spaced grid (deterministic, no optimiser to tune); 1.0 without held-out data.
pub(crate) fn fit_temperature(logits: &[Vec<f32>], y: &[u32]) -> f32 {
    if logits.is_empty() {
        return 1.0;
    }
    let grid = (0..=80).map(|i| 0.05f32 * (200f32).powf(i as f32 / 80.0));
    let mut best = (f64::INFINITY, 1.0f32);
    for t in grid {
        let v = nll(logits, y, t);
        if v < best.0 {
            best = (v, t);
        }
    }
    best.1
}

/// The held-out negative log-likelihood per example at the best temperature: how well
/// logits rank and how well they calibrate, with no threshold to make it jumpy.
pub(crate) fn calibrated_nll(logits: &[Vec<f32>], y: &[u32]) -> f64 {
    nll(logits, y, fit_temperature(logits, y)) / logits.len().max(1) as f64
}

/// The threshold below which an input is out of scope.
///
/// With out-of-scope examples, the one maximising in-scope accuracy plus out-of-scope
/// recall (both count, neither is traded away silently). Without, the one that keeps
/// `coverage` of the held-out in-scope inputs.
pub(crate) fn choose_threshold(
    in_scores: &[f32],
    in_right: &[bool],
    oos_scores: &[f32],
    coverage: f32,
) -> f32 {
    if in_scores.is_empty() {
        return 0.0;
    }
    if oos_scores.is_empty() {
        let mut s = in_scores.to_vec();
        s.sort_by(f32::total_cmp);
        let cut = ((1.0 - coverage.clamp(0.0, 1.0)) * s.len() as f32).floor() as usize;
        return s.get(cut.min(s.len() - 1)).copied().unwrap_or(0.0);
    }
    let mut candidates: Vec<f32> = in_scores.iter().chain(oos_scores).copied().collect();
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    let n_in = in_scores.len() as f32;
    let n_oos = oos_scores.len() as f32;
    let mut best = (f32::NEG_INFINITY, 0.0f32);
    for t in candidates {
        let kept_right = in_scores
            .iter()
            .zip(in_right)
            .filter(|(s, r)| **r && **s >= t)
            .count() as f32;
        let caught = oos_scores.iter().filter(|s| **s < t).count() as f32;
        let objective = kept_right / n_in + caught / n_oos;
        if objective > best.0 {
            best = (objective, t);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_softens_overconfident_logits() {
        // Confident logits that are wrong a third of the time want a temperature above 1.
        let logits = vec![vec![4.0, 0.0], vec![4.0, 0.0], vec![4.0, 0.0]];
        let t = fit_temperature(&logits, &[0, 0, 1]);
        assert!(t > 1.5, "{t}");
        let p = softmax(&logits[0], t);
        assert!((p[0] - 2.0 / 3.0).abs() < 0.05, "{p:?}");
        assert_eq!(fit_temperature(&[], &[]), 1.0);
    }

    #[test]
    fn threshold_from_coverage_or_from_examples() {
        let in_scores: Vec<f32> = (0..100).map(|i| 0.5 + i as f32 / 200.0).collect();
        let right = vec![true; 100];
        let t = choose_threshold(&in_scores, &right, &[], 0.9);
        let kept = in_scores.iter().filter(|s| **s >= t).count();
        assert_eq!(kept, 90);
        // Out-of-scope inputs all score below 0.55: the threshold separates them.
        let oos: Vec<f32> = (0..20).map(|i| 0.3 + i as f32 / 100.0).collect();
        let t = choose_threshold(&in_scores, &right, &oos, 0.9);
        assert!(t > 0.49 && t <= 0.5 + 1e-6, "{t}");
    }
}
