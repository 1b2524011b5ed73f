//! The bot's rules, pure: when to answer, when to offer choices, when to ask again, when
//! to hand off. Every threshold comes from `[bot]`; `explain` strings carry the numbers.

use std::collections::BTreeMap;

use regex::Regex;

use confidant_inference::Scores;

use crate::config::BotConfig;
use crate::routing::{PolicyError, RoutingPolicy, compile};

#[derive(Debug, Clone)]
pub struct BotPolicy {
    pub min_score: f32,
    pub min_score_by_lang: BTreeMap<String, f32>,
    pub min_margin: f32,
    pub max_choices: usize,
    pub max_failures: u32,
    pub followup_words: usize,
    pub intent_classifier: String,
    pub human_only: Vec<String>,
    escape: Vec<Regex>,
}

/// A retrieved article as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub article_id: String,
    /// Dense similarity of the best chunk (0 when only BM25 found it).
    pub confidence: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    /// Index into the candidates.
    Answer(usize),
    /// Indices of the close candidates, best first.
    Clarify(Vec<usize>),
    NoMatch,
}

fn unit(key: &str, v: f32) -> Result<(), PolicyError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(PolicyError {
            key: key.into(),
            message: "must be between 0 and 1".into(),
        })
    }
}

impl BotPolicy {
    /// `scores` are the serving model's measured thresholds (its manifest), used where
    /// the config sets none.
    pub fn new(
        c: &BotConfig,
        routing: &RoutingPolicy,
        scores: &Scores,
    ) -> Result<Self, PolicyError> {
        let min_score = c.min_score.or(scores.answer).unwrap_or(0.6);
        let min_margin = c.min_margin.or(scores.answer_margin).unwrap_or(0.06);
        unit("bot.min_score", min_score)?;
        unit("bot.min_margin", min_margin)?;
        for (lang, v) in &c.min_score_by_lang {
            unit(&format!("bot.min_score_by_lang.{lang}"), *v)?;
        }
        let mut min_score_by_lang = scores.answer_by_lang.clone();
        min_score_by_lang.extend(c.min_score_by_lang.clone());
        if c.max_choices < 2 {
            return Err(PolicyError {
                key: "bot.max_choices".into(),
                message: "must be at least 2".into(),
            });
        }
        if c.max_failures == 0 {
            return Err(PolicyError {
                key: "bot.max_failures".into(),
                message: "must be positive".into(),
            });
        }
        for (i, name) in c.human_only.iter().enumerate() {
            if routing.risk(name).is_none() {
                return Err(PolicyError {
                    key: format!("bot.human_only[{i}]"),
                    message: format!("{name:?} is not a routing.risk category"),
                });
            }
        }
        if c.escape_patterns.is_empty() {
            return Err(PolicyError {
                key: "bot.escape_patterns".into(),
                message:
                    "customers must always be able to ask for a person: give at least one pattern"
                        .into(),
            });
        }
        Ok(Self {
            min_score,
            min_score_by_lang,
            min_margin,
            max_choices: c.max_choices,
            max_failures: c.max_failures,
            followup_words: c.followup_words,
            intent_classifier: c.intent_classifier.clone(),
            human_only: c.human_only.clone(),
            escape: c
                .escape_patterns
                .iter()
                .enumerate()
                .map(|(i, p)| compile(format!("bot.escape_patterns[{i}]"), p))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The escape hatch: the customer asks for a person.
    pub fn wants_person(&self, text: &str) -> bool {
        self.escape.iter().any(|p| p.is_match(text))
    }

    pub fn threshold(&self, lang: &str) -> f32 {
        self.min_score_by_lang
            .get(lang)
            .copied()
            .unwrap_or(self.min_score)
    }

    /// Whether a turn is short enough to be a follow-up of the previous one.
    pub fn is_short(&self, text: &str) -> bool {
        let words = text.split_whitespace().count();
        // Chinese has no spaces: count characters, about two per word.
        let cjk = text.chars().filter(|c| is_cjk(*c)).count();
        words + cjk / 2 <= self.followup_words
    }

    /// Answer, offer choices or ask again. `candidates` come in the retrieval's (fused)
    /// order, whose first is the answer when its dense similarity clears the threshold;
    /// any other candidate that clears it too and comes within the margin of the first (or
    /// above it: the signals disagree) turns the answer into choices, in retrieval order.
    pub fn pick(&self, lang: &str, candidates: &[Candidate]) -> (Pick, String) {
        let t = self.threshold(lang);
        let Some(best) = candidates.first() else {
            return (Pick::NoMatch, "no article matched".into());
        };
        if best.confidence < t {
            return (
                Pick::NoMatch,
                format!(
                    "best article {} at {:.3} is below the threshold {t:.2}",
                    best.article_id, best.confidence
                ),
            );
        }
        let close: Vec<usize> = (0..candidates.len())
            .filter(|&i| {
                let c = candidates[i].confidence;
                c >= t && best.confidence - c < self.min_margin
            })
            .take(self.max_choices)
            .collect();
        if close.len() >= 2 {
            let ids: Vec<String> = close
                .iter()
                .map(|&i| {
                    format!(
                        "{} {:.3}",
                        candidates[i].article_id, candidates[i].confidence
                    )
                })
                .collect();
            return (
                Pick::Clarify(close),
                format!(
                    "{} articles within the margin {:.2}: {}",
                    ids.len(),
                    self.min_margin,
                    ids.join(", ")
                ),
            );
        }
        let runner_up = candidates
            .iter()
            .skip(1)
            .map(|c| c.confidence)
            .fold(None, |m: Option<f32>, c| Some(m.map_or(c, |m| m.max(c))))
            .map(|c| format!("{c:.3}"))
            .unwrap_or_else(|| "none".into());
        (
            Pick::Answer(0),
            format!(
                "article {} at {:.3} clears {t:.2}; best other {runner_up}",
                best.article_id, best.confidence
            ),
        )
    }
}

pub fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}')
}

/// The language of a turn that names none: Chinese script means "zh", otherwise the first
/// configured language that is not "zh".
pub fn detect_lang(text: &str, languages: &[String]) -> String {
    let has = |l: &str| languages.iter().any(|x| x == l);
    if text.chars().any(is_cjk) && has("zh") {
        return "zh".into();
    }
    languages
        .iter()
        .find(|l| l.as_str() != "zh")
        .or(languages.first())
        .cloned()
        .unwrap_or_else(|| "en".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoutingConfig;

    fn policy() -> BotPolicy {
        let routing = RoutingPolicy::new(&RoutingConfig::default()).unwrap();
        let c = BotConfig {
            min_score_by_lang: [("zh".to_string(), 0.8)].into(),
            ..BotConfig::default()
        };
        BotPolicy::new(&c, &routing, &Scores::default()).unwrap()
    }

    fn cands(scores: &[(&str, f32)]) -> Vec<Candidate> {
        scores
            .iter()
            .map(|(id, s)| Candidate {
                article_id: id.to_string(),
                confidence: *s,
            })
            .collect()
    }

    #[test]
    fn answers_only_above_the_threshold_and_clear_of_the_runner_up() {
        let p = policy();
        let (pick, why) = p.pick("en", &cands(&[("a", 0.81), ("b", 0.62)]));
        assert_eq!(pick, Pick::Answer(0));
        assert!(why.contains("a at 0.810"), "{why}");
        // The retrieval's first is the answer even when a lower-ranked one is far below.
        assert_eq!(
            p.pick("en", &cands(&[("a", 0.70), ("b", 0.40)])).0,
            Pick::Answer(0)
        );
        assert_eq!(p.pick("en", &cands(&[("a", 0.55)])).0, Pick::NoMatch);
        assert_eq!(p.pick("en", &[]).0, Pick::NoMatch);
        // Per-language thresholds.
        assert_eq!(p.pick("zh", &cands(&[("a", 0.75)])).0, Pick::NoMatch);
        assert_eq!(p.pick("zh", &cands(&[("a", 0.85)])).0, Pick::Answer(0));
    }

    #[test]
    fn close_articles_become_choices_best_first() {
        let p = policy();
        let c = cands(&[("x", 0.70), ("y", 0.72), ("z", 0.50), ("w", 0.71)]);
        let (pick, why) = p.pick("en", &c);
        assert_eq!(pick, Pick::Clarify(vec![0, 1, 3]));
        assert!(why.contains("3 articles"), "{why}");
        // A lower-ranked article the dense signal likes much better: the signals
        // disagree, so the customer chooses.
        let c = cands(&[("x", 0.65), ("y", 0.90)]);
        assert_eq!(p.pick("en", &c).0, Pick::Clarify(vec![0, 1]));
        // A close runner-up below the threshold is no choice.
        let c = cands(&[("x", 0.61), ("y", 0.59)]);
        assert_eq!(p.pick("en", &c).0, Pick::Answer(0));
    }

    #[test]
    fn escape_hatch_in_several_languages() {
        let p = policy();
        for t in [
            "I want to speak to a human",
            "can I talk to someone please",
            "get me a real person!",
            "AGENT",
            "transfer me to an operator",
            "转人工",
            "我要人工客服",
            "quiero hablar con una persona",
            "je veux parler à un conseiller",
        ] {
            assert!(p.wants_person(t), "{t}");
        }
        for t in [
            "How do I reset my PIN?",
            "人工智能贷款审批要多久",
            "my agent number is 5",
        ] {
            assert!(!p.wants_person(t), "{t}");
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let routing = RoutingPolicy::new(&RoutingConfig::default()).unwrap();
        let bad = |c: BotConfig| {
            BotPolicy::new(&c, &routing, &Scores::default())
                .unwrap_err()
                .key
        };
        assert_eq!(
            bad(BotConfig {
                human_only: vec!["fraud".into(), "aliens".into()],
                ..BotConfig::default()
            }),
            "bot.human_only[1]"
        );
        assert_eq!(
            bad(BotConfig {
                escape_patterns: vec![],
                ..BotConfig::default()
            }),
            "bot.escape_patterns"
        );
        assert_eq!(
            bad(BotConfig {
                min_score: Some(1.5),
                ..BotConfig::default()
            }),
            "bot.min_score"
        );
    }

    #[test]
    fn thresholds_come_from_the_config_else_the_models_manifest_else_built_in() {
        let routing = RoutingPolicy::new(&RoutingConfig::default()).unwrap();
        let e5 = Scores {
            answer: Some(0.9),
            answer_by_lang: [("zh".to_string(), 0.92)].into(),
            answer_margin: Some(0.02),
            ..Scores::default()
        };
        let p = BotPolicy::new(&BotConfig::default(), &routing, &e5).unwrap();
        assert_eq!(
            (p.threshold("en"), p.threshold("zh"), p.min_margin),
            (0.9, 0.92, 0.02)
        );
        let site = BotConfig {
            min_score: Some(0.7),
            min_score_by_lang: [("zh".to_string(), 0.75)].into(),
            min_margin: Some(0.05),
            ..BotConfig::default()
        };
        let p = BotPolicy::new(&site, &routing, &e5).unwrap();
        assert_eq!(
            (p.threshold("en"), p.threshold("zh"), p.min_margin),
            (0.7, 0.75, 0.05)
        );
        let p = BotPolicy::new(&BotConfig::default(), &routing, &Scores::default()).unwrap();
        assert_eq!((p.threshold("zh"), p.min_margin), (0.6, 0.06));
    }

    #[test]
    fn language_and_follow_ups() {
        let langs = vec!["en".to_string(), "zh".to_string()];
        assert_eq!(detect_lang("信用卡丢了", &langs), "zh");
        assert_eq!(detect_lang("lost card", &langs), "en");
        let p = policy();
        assert!(p.is_short("and for a credit card?"));
        assert!(!p.is_short("how long does an international transfer to another bank take"));
        assert!(p.is_short("那信用卡呢"));
    }
}
