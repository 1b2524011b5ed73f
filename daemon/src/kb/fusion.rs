//! Fusing the dense and lexical rankings over articles. The index returns chunks; an
//! article's rank in a signal is the position of its best chunk among the articles that
//! signal found. Two fusions: reciprocal rank fusion (rank-only, robust to score scales)
//! and a convex combination of per-query min-max normalised scores (which keeps how far
//! ahead a hit is, and lets the stronger signal weigh more). Each fused hit keeps both
//! signals' scores and ranks so that policies (the bot's thresholds) can use them.

use std::collections::HashMap;

use crate::index::Hit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Hybrid,
    Dense,
    Lexical,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Σ 1/(k + rank).
    Rrf { k: f32 },
    /// w·dense + (1−w)·lexical, each min-max normalised over this query's candidates; a
    /// signal that did not find the article contributes 0.
    Convex { dense_weight: f32 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signal {
    /// 1-based rank among articles.
    pub rank: u32,
    pub score: f32,
    pub chunk: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub article_id: String,
    pub fused: f32,
    pub dense: Option<Signal>,
    pub lexical: Option<Signal>,
}

impl Fused {
    /// The chunk that explains the hit: the dense one when both found it.
    pub fn best_chunk(&self) -> u32 {
        self.dense.or(self.lexical).map(|s| s.chunk).unwrap_or(0)
    }
}

/// Best chunk per article, in score order (hits arrive best first).
fn by_article(hits: &[Hit]) -> Vec<(&str, Signal)> {
    let mut seen: Vec<(&str, Signal)> = Vec::new();
    for h in hits {
        if seen.iter().any(|(a, _)| *a == h.article_id) {
            continue;
        }
        let rank = seen.len() as u32 + 1;
        seen.push((
            &h.article_id,
            Signal {
                rank,
                score: h.score,
                chunk: h.chunk,
            },
        ));
    }
    seen
}

/// Fuses and orders; ties go to the better dense score, then to the article id, so the
/// order is deterministic.
pub fn fuse(dense: &[Hit], lexical: &[Hit], mode: Mode, fusion: Fusion) -> Vec<Fused> {
    let mut out: HashMap<&str, Fused> = HashMap::new();
    let (wd, wl) = match (mode, fusion) {
        (Mode::Dense, _) => (1.0, 0.0),
        (Mode::Lexical, _) => (0.0, 1.0),
        (Mode::Hybrid, Fusion::Rrf { .. }) => (1.0, 1.0),
        (Mode::Hybrid, Fusion::Convex { dense_weight }) => (dense_weight, 1.0 - dense_weight),
    };
    let contribution = |s: Signal, min: f32, max: f32| match fusion {
        Fusion::Rrf { k } => 1.0 / (k + s.rank as f32),
        Fusion::Convex { .. } if max > min => (s.score - min) / (max - min),
        // One candidate, or all tied: each counts fully.
        Fusion::Convex { .. } => 1.0,
    };
    let range = |hits: &[Hit]| {
        let min = hits.iter().map(|h| h.score).fold(f32::INFINITY, f32::min);
        let max = hits
            .iter()
            .map(|h| h.score)
            .fold(f32::NEG_INFINITY, f32::max);
        (min, max)
    };
    let (dmin, dmax) = range(dense);
    let (lmin, lmax) = range(lexical);
    for (a, s) in by_article(dense) {
        let e = out.entry(a).or_insert_with(|| Fused {
            article_id: a.to_string(),
            fused: 0.0,
            dense: None,
            lexical: None,
        });
        e.dense = Some(s);
        e.fused += wd * contribution(s, dmin, dmax);
    }
    for (a, s) in by_article(lexical) {
        let e = out.entry(a).or_insert_with(|| Fused {
            article_id: a.to_string(),
            fused: 0.0,
            dense: None,
            lexical: None,
        });
        e.lexical = Some(s);
        e.fused += wl * contribution(s, lmin, lmax);
    }
    // In a single-signal mode, only what that signal found.
    let mut v: Vec<Fused> = out
        .into_values()
        .filter(|f| (wd > 0.0 && f.dense.is_some()) || (wl > 0.0 && f.lexical.is_some()))
        .collect();
    v.sort_by(|a, b| {
        b.fused
            .total_cmp(&a.fused)
            .then_with(|| {
                let score = |f: &Fused| f.dense.map(|s| s.score).unwrap_or(f32::MIN);
                score(b).total_cmp(&score(a))
            })
            .then_with(|| a.article_id.cmp(&b.article_id))
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(list: &[(&str, u32, f32)]) -> Vec<Hit> {
        list.iter()
            .map(|&(a, c, s)| Hit {
                article_id: a.into(),
                chunk: c,
                score: s,
            })
            .collect()
    }

    #[test]
    fn agreement_beats_a_single_signal() {
        let dense = hits(&[("a", 0, 0.9), ("a", 1, 0.8), ("b", 0, 0.7), ("c", 2, 0.6)]);
        let lexical = hits(&[("c", 1, 9.0), ("b", 3, 5.0)]);
        let f = fuse(&dense, &lexical, Mode::Hybrid, Fusion::Rrf { k: 60.0 });
        let order: Vec<&str> = f.iter().map(|x| x.article_id.as_str()).collect();
        // c: 1/(60+3) + 1/(60+1) edges out b: 2/(60+2); a has one signal only.
        assert_eq!(order, ["c", "b", "a"]);
        let a = f.iter().find(|x| x.article_id == "a").unwrap();
        assert_eq!(a.dense.unwrap().rank, 1);
        assert_eq!(
            a.dense.unwrap().chunk,
            0,
            "the best chunk represents the article"
        );
        assert!(a.lexical.is_none());
        let c = f.iter().find(|x| x.article_id == "c").unwrap();
        assert_eq!(c.lexical.unwrap().rank, 1);
        assert_eq!(c.dense.unwrap().rank, 3, "ranks count articles, not chunks");
    }

    #[test]
    fn single_modes_rank_by_their_signal_but_report_both() {
        let dense = hits(&[("a", 0, 0.9), ("b", 0, 0.7)]);
        let lexical = hits(&[("b", 0, 3.0)]);
        for fusion in [
            Fusion::Rrf { k: 60.0 },
            Fusion::Convex { dense_weight: 0.7 },
        ] {
            let f = fuse(&dense, &lexical, Mode::Dense, fusion);
            assert_eq!(f[0].article_id, "a");
            assert!(f[1].lexical.is_some());
            let f = fuse(&dense, &lexical, Mode::Lexical, fusion);
            assert_eq!(f.len(), 1);
            assert_eq!(f[0].article_id, "b");
        }
    }

    #[test]
    fn convex_fusion_keeps_margins() {
        // a is far ahead on dense; b is barely second on dense but first on lexical.
        let dense = hits(&[("a", 0, 0.95), ("b", 0, 0.60), ("c", 0, 0.58)]);
        let lexical = hits(&[("b", 0, 4.0), ("a", 0, 3.9), ("c", 0, 1.0)]);
        let f = fuse(
            &dense,
            &lexical,
            Mode::Hybrid,
            Fusion::Convex { dense_weight: 0.5 },
        );
        assert_eq!(f[0].article_id, "a", "{f:?}");
        assert!((f[0].fused - (0.5 + 0.5 * 2.9 / 3.0)).abs() < 1e-6);
        // RRF sees only ranks: a tie, broken by the dense score.
        let r = fuse(&dense, &lexical, Mode::Hybrid, Fusion::Rrf { k: 60.0 });
        assert_eq!(r[0].fused, r[1].fused);
    }
}
