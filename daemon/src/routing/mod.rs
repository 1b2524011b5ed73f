//! Routing advice: which skill queue a contact goes to and how urgently. The policy is
//! pure (risk categories, the intent→queue map, priority points) so every rule is tested
//! here; `advise` runs the models and stores the advice.

mod advise;

pub use advise::{RouteInput, RouteOutput, advise, outcome};
use std::collections::BTreeMap;

use regex::Regex;

use crate::config::{RiskConfig, RoutingConfig};

/// A configuration value the policy cannot use, named by its key.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{key}: {message}")]
pub struct PolicyError {
    pub key: String,
    pub message: String,
}

pub(crate) fn compile(key: String, pattern: &str) -> Result<Regex, PolicyError> {
    Regex::new(pattern).map_err(|e| PolicyError {
        key,
        message: e.to_string(),
    })
}

#[derive(Debug, Clone)]
pub struct Risk {
    pub name: String,
    pub intents: Vec<String>,
    pub patterns: Vec<Regex>,
    pub queue: String,
    pub points: i32,
}

impl Risk {
    fn new(i: usize, c: &RiskConfig) -> Result<Self, PolicyError> {
        let key = |k: &str| format!("routing.risk[{i}].{k}");
        if c.name.trim().is_empty() {
            return Err(PolicyError {
                key: key("name"),
                message: "must not be empty".into(),
            });
        }
        if c.queue.trim().is_empty() {
            return Err(PolicyError {
                key: key("queue"),
                message: "must not be empty".into(),
            });
        }
        if c.intents.is_empty() && c.patterns.is_empty() {
            return Err(PolicyError {
                key: key("patterns"),
                message: "give patterns or intents (or both)".into(),
            });
        }
        Ok(Self {
            name: c.name.clone(),
            intents: c.intents.clone(),
            patterns: c
                .patterns
                .iter()
                .enumerate()
                .map(|(j, p)| compile(key(&format!("patterns[{j}]")), p))
                .collect::<Result<_, _>>()?,
            queue: c.queue.clone(),
            points: c.points,
        })
    }

    /// Whether `text` (or its intent) falls in this category; returns what matched.
    pub fn matches(&self, text: &str, intent: Option<&str>) -> Option<String> {
        if let Some(label) = intent
            && self.intents.iter().any(|i| i == label)
        {
            return Some(format!("intent {label}"));
        }
        self.patterns
            .iter()
            .any(|p| p.is_match(text))
            .then(|| "a risk phrase".to_string())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    pub name: &'static str,
    pub points: i32,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Priority {
    /// 0–100.
    pub value: u32,
    pub factors: Vec<Factor>,
}

/// What priority depends on besides the risk category.
#[derive(Debug, Clone, Default)]
pub struct Signals<'a> {
    pub tier: &'a str,
    pub waited_seconds: u32,
    /// Probability of negative sentiment, when a sentiment head is loaded.
    pub negative: Option<f32>,
}

#[derive(Debug, Clone)]
pub struct RoutingPolicy {
    pub default_queue: String,
    pub queues: BTreeMap<String, String>,
    pub min_intent_probability: f32,
    pub intent_classifier: String,
    pub sentiment_classifier: String,
    base_points: i32,
    tier_points: BTreeMap<String, i32>,
    wait_points_per_minute: f32,
    max_wait_points: i32,
    sentiment_points: i32,
    pub risks: Vec<Risk>,
}

impl RoutingPolicy {
    pub fn new(c: &RoutingConfig) -> Result<Self, PolicyError> {
        let bad = |key: &str, message: &str| PolicyError {
            key: format!("routing.{key}"),
            message: message.into(),
        };
        if c.default_queue.trim().is_empty() {
            return Err(bad("default_queue", "must not be empty"));
        }
        if let Some((intent, _)) = c.queues.iter().find(|(_, q)| q.trim().is_empty()) {
            return Err(bad(&format!("queues.{intent}"), "must name a queue"));
        }
        if !(0.0..=1.0).contains(&c.min_intent_probability) {
            return Err(bad("min_intent_probability", "must be between 0 and 1"));
        }
        if !(c.wait_points_per_minute.is_finite() && c.wait_points_per_minute >= 0.0) {
            return Err(bad(
                "wait_points_per_minute",
                "must be a non-negative number",
            ));
        }
        let risks: Vec<Risk> = c
            .risk
            .iter()
            .enumerate()
            .map(|(i, r)| Risk::new(i, r))
            .collect::<Result<_, _>>()?;
        for (i, r) in risks.iter().enumerate() {
            if risks[..i].iter().any(|o| o.name == r.name) {
                return Err(bad(&format!("risk[{i}].name"), "names must be unique"));
            }
        }
        Ok(Self {
            default_queue: c.default_queue.clone(),
            queues: c.queues.clone(),
            min_intent_probability: c.min_intent_probability,
            intent_classifier: c.intent_classifier.clone(),
            sentiment_classifier: c.sentiment_classifier.clone(),
            base_points: c.base_points,
            tier_points: c.tier_points.clone(),
            wait_points_per_minute: c.wait_points_per_minute,
            max_wait_points: c.max_wait_points,
            sentiment_points: c.sentiment_points,
            risks,
        })
    }

    pub fn risk(&self, name: &str) -> Option<&Risk> {
        self.risks.iter().find(|r| r.name == name)
    }

    /// The first risk category `text` or its intent falls in.
    pub fn classify_risk(&self, text: &str, intent: Option<&str>) -> Option<(&Risk, String)> {
        self.risks
            .iter()
            .find_map(|r| r.matches(text, intent).map(|why| (r, why)))
    }

    /// The queue and why: a risk category's queue first, then the intent's (when it is
    /// confident enough and mapped), then the default.
    pub fn queue(&self, risk: Option<&Risk>, intent: Option<(&str, f32)>) -> (String, String) {
        if let Some(r) = risk {
            return (r.queue.clone(), format!("risk {} → {}", r.name, r.queue));
        }
        if let Some((label, p)) = intent {
            if let Some(q) = self.queues.get(label) {
                if p >= self.min_intent_probability {
                    return (q.clone(), format!("intent {label} ({p:.2}) → {q}"));
                }
                return (
                    self.default_queue.clone(),
                    format!(
                        "intent {label} at {p:.2} is below routing.min_intent_probability {:.2}: default",
                        self.min_intent_probability
                    ),
                );
            }
            return (
                self.default_queue.clone(),
                format!("intent {label} has no queue in routing.queues: default"),
            );
        }
        (self.default_queue.clone(), "no intent: default".into())
    }

    /// Priority points: base + risk + tier + waiting + negative sentiment, clamped to 0–100.
    pub fn priority(&self, risk: Option<&Risk>, s: &Signals<'_>) -> Priority {
        let mut factors = vec![Factor {
            name: "base",
            points: self.base_points,
            detail: "every contact".into(),
        }];
        if let Some(r) = risk {
            factors.push(Factor {
                name: "risk",
                points: r.points,
                detail: r.name.clone(),
            });
        }
        if !s.tier.is_empty() {
            let points = self.tier_points.get(s.tier).copied().unwrap_or(0);
            factors.push(Factor {
                name: "tier",
                points,
                detail: if self.tier_points.contains_key(s.tier) {
                    s.tier.to_string()
                } else {
                    format!("{} (not in routing.tier_points)", s.tier)
                },
            });
        }
        if s.waited_seconds > 0 {
            let minutes = s.waited_seconds as f32 / 60.0;
            let points = ((minutes * self.wait_points_per_minute).floor() as i32)
                .min(self.max_wait_points)
                .max(0);
            factors.push(Factor {
                name: "waiting",
                points,
                detail: format!("{} s", s.waited_seconds),
            });
        }
        if let Some(p) = s.negative
            && p > 0.5
        {
            factors.push(Factor {
                name: "sentiment",
                points: (p * self.sentiment_points as f32).round() as i32,
                detail: format!("negative {p:.2}"),
            });
        }
        let sum: i32 = factors.iter().map(|f| f.points).sum();
        Priority {
            value: sum.clamp(0, 100) as u32,
            factors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RoutingPolicy {
        let mut c = RoutingConfig::default();
        c.queues.insert("lost_card".into(), "cards".into());
        c.risk[2].intents.push("card_fraud".into());
        RoutingPolicy::new(&c).unwrap()
    }

    #[test]
    fn risk_categories_in_english_and_chinese() {
        let p = policy();
        let cases = [
            ("Someone used my card without asking", Some("fraud")),
            ("我的卡被盗刷了", Some("fraud")),
            ("I want to file a complaint", Some("complaint")),
            ("我要投诉", Some("complaint")),
            (
                "I have chest pain and can't breathe",
                Some("medical_emergency"),
            ),
            ("我胸痛", Some("medical_emergency")),
            ("I want to kill myself", Some("self_harm")),
            ("我不想活了", Some("self_harm")),
            ("What are your opening hours?", None),
            ("我忘记了密码", None),
        ];
        for (text, want) in cases {
            let got = p.classify_risk(text, None).map(|(r, _)| r.name.as_str());
            assert_eq!(got, want, "{text}");
        }
        let (r, why) = p.classify_risk("hello", Some("card_fraud")).unwrap();
        assert_eq!(
            (r.name.as_str(), why.as_str()),
            ("fraud", "intent card_fraud")
        );
    }

    #[test]
    fn queue_prefers_risk_then_confident_intent_then_default() {
        let p = policy();
        let fraud = p.risk("fraud");
        assert_eq!(p.queue(fraud, Some(("lost_card", 0.9))).0, "fraud");
        assert_eq!(p.queue(None, Some(("lost_card", 0.9))).0, "cards");
        let (q, why) = p.queue(None, Some(("lost_card", 0.3)));
        assert_eq!(q, "general");
        assert!(why.contains("below"), "{why}");
        assert_eq!(p.queue(None, Some(("weather", 0.99))).0, "general");
        assert_eq!(p.queue(None, None).0, "general");
    }

    #[test]
    fn priority_adds_its_factors_and_clamps() {
        let p = policy();
        let s = Signals {
            tier: "gold",
            waited_seconds: 300,
            negative: Some(0.8),
        };
        let pr = p.priority(None, &s);
        // base 20 + gold 15 + 5 min × 2 = 10 + 0.8 × 15 = 12
        assert_eq!(pr.value, 57);
        assert_eq!(
            pr.factors.iter().map(|f| f.name).collect::<Vec<_>>(),
            ["base", "tier", "waiting", "sentiment"]
        );
        let pr = p.priority(
            p.risk("self_harm"),
            &Signals {
                tier: "private",
                waited_seconds: 3600,
                negative: None,
            },
        );
        assert_eq!(pr.value, 100, "clamped");
        let calm = p.priority(
            None,
            &Signals {
                negative: Some(0.4),
                tier: "unknown-tier",
                ..Default::default()
            },
        );
        assert_eq!(
            calm.value, 20,
            "unknown tiers and mild sentiment add nothing"
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        let mut c = RoutingConfig::default();
        c.risk[1].patterns.push("(unclosed".into());
        let e = RoutingPolicy::new(&c).unwrap_err();
        assert_eq!(e.key, "routing.risk[1].patterns[2]");
        let mut c = RoutingConfig::default();
        c.queues.insert("x".into(), " ".into());
        assert_eq!(RoutingPolicy::new(&c).unwrap_err().key, "routing.queues.x");
        let mut c = RoutingConfig::default();
        c.risk[3].name = "fraud".into();
        assert_eq!(
            RoutingPolicy::new(&c).unwrap_err().key,
            "routing.risk[3].name"
        );
    }
}
