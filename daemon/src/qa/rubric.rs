//! Rubrics: a TOML file per tenant, validated when read (errors name the file and the
//! key), patterns compiled; exemplars are embedded once per rubric version by the caller.

use std::path::Path;

use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The speaker (the agent by default) must say it: patterns or exemplars.
    RequiredPhrase,
    /// The agent must never say it.
    ForbiddenPhrase,
    /// Required within the agent's first `within_turns` turns or `within_seconds`.
    Disclosure,
    /// Every customer turn answered by the agent within `max_gap_seconds`.
    ResponseGap,
    /// The customer's negative sentiment at the end not above the start (+ tolerance).
    Sentiment,
    /// The customer confirms the problem is solved in their last turns.
    Resolution,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RequiredPhrase => "required_phrase",
            Kind::ForbiddenPhrase => "forbidden_phrase",
            Kind::Disclosure => "disclosure",
            Kind::ResponseGap => "response_gap",
            Kind::Sentiment => "sentiment",
            Kind::Resolution => "resolution",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    #[default]
    Any,
    /// Within the speaker's first `within_turns` turns.
    Start,
    /// Within the speaker's last `within_turns` turns.
    End,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    kind: Kind,
    #[serde(default = "one")]
    weight: f32,
    #[serde(default)]
    critical: bool,
    #[serde(default)]
    speaker: Option<String>,
    #[serde(default)]
    position: Position,
    #[serde(default)]
    within_turns: u32,
    #[serde(default)]
    within_seconds: u32,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default)]
    exemplars: Vec<String>,
    /// Unset: the serving model's `scores.exemplar` (similarities are model-specific).
    #[serde(default)]
    min_similarity: Option<f32>,
    #[serde(default)]
    max_gap_seconds: u32,
    #[serde(default = "tolerance")]
    tolerance: f32,
    #[serde(default)]
    message: String,
}

fn one() -> f32 {
    1.0
}
/// Where neither the rule nor the model's manifest says.
pub const DEFAULT_MIN_SIMILARITY: f32 = 0.7;
fn tolerance() -> f32 {
    0.1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RubricFile {
    name: String,
    rules: Vec<RuleFile>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub kind: Kind,
    pub weight: f32,
    pub critical: bool,
    /// "agent" or "customer".
    pub speaker: String,
    pub position: Position,
    pub within_turns: u32,
    pub within_seconds: u32,
    pub patterns: Vec<Regex>,
    pub exemplars: Vec<String>,
    pub min_similarity: f32,
    pub max_gap_seconds: u32,
    pub tolerance: f32,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Rubric {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// `file: key: message`.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{file}: {key}: {message}")]
pub struct RubricError {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl Rubric {
    /// `default_similarity`: the exemplar threshold of rules that set none (the serving
    /// model's `scores.exemplar`).
    pub fn parse(file: &Path, text: &str, default_similarity: f32) -> Result<Self, RubricError> {
        let f = file.display().to_string();
        let err = |key: String, message: String| RubricError {
            file: f.clone(),
            key,
            message,
        };
        let raw: RubricFile =
            toml::from_str(text).map_err(|e| err("(file)".into(), e.message().to_string()))?;
        if raw.rules.is_empty() {
            return Err(err(
                "rules".into(),
                "a rubric needs at least one rule".into(),
            ));
        }
        let mut rules = Vec::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            let key = |k: &str| format!("rules[{i}].{k}");
            if r.id.trim().is_empty() {
                return Err(err(key("id"), "must not be empty".into()));
            }
            if rules.iter().any(|o: &Rule| o.id == r.id) {
                return Err(err(key("id"), format!("{:?} is used twice", r.id)));
            }
            if !(r.weight.is_finite() && r.weight >= 0.0) {
                return Err(err(key("weight"), "must be a non-negative number".into()));
            }
            let min_similarity = r.min_similarity.unwrap_or(default_similarity);
            if !(0.0..=1.0).contains(&min_similarity) {
                return Err(err(key("min_similarity"), "must be between 0 and 1".into()));
            }
            let speaker = r.speaker.clone().unwrap_or_else(|| {
                if r.kind == Kind::Resolution {
                    "customer".into()
                } else {
                    "agent".into()
                }
            });
            if speaker != "agent" && speaker != "customer" {
                return Err(err(
                    key("speaker"),
                    "expected \"agent\" or \"customer\"".into(),
                ));
            }
            let phrase = matches!(
                r.kind,
                Kind::RequiredPhrase | Kind::ForbiddenPhrase | Kind::Disclosure | Kind::Resolution
            );
            if phrase && r.patterns.is_empty() && r.exemplars.is_empty() {
                return Err(err(
                    key("patterns"),
                    "give patterns or exemplars (or both)".into(),
                ));
            }
            if r.kind == Kind::Disclosure && r.within_turns == 0 && r.within_seconds == 0 {
                return Err(err(
                    key("within_turns"),
                    "a disclosure needs within_turns or within_seconds".into(),
                ));
            }
            if r.kind == Kind::ResponseGap && r.max_gap_seconds == 0 {
                return Err(err(key("max_gap_seconds"), "must be positive".into()));
            }
            let mut patterns = Vec::new();
            for (j, p) in r.patterns.iter().enumerate() {
                patterns.push(
                    Regex::new(p)
                        .map_err(|e| err(key(&format!("patterns[{j}]")), e.to_string()))?,
                );
            }
            rules.push(Rule {
                id: r.id,
                kind: r.kind,
                weight: r.weight,
                critical: r.critical,
                speaker,
                position: r.position,
                within_turns: r.within_turns,
                within_seconds: r.within_seconds,
                patterns,
                exemplars: r.exemplars,
                min_similarity,
                max_gap_seconds: r.max_gap_seconds,
                tolerance: r.tolerance,
                message: r.message,
            });
        }
        Ok(Self {
            name: raw.name,
            rules,
        })
    }

    /// Every exemplar of every rule, in rule order (the scorer indexes into it).
    pub fn exemplars(&self) -> Vec<String> {
        self.rules
            .iter()
            .flat_map(|r| r.exemplars.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rubrics_parse() {
        for (name, text) in [
            (
                "bank.toml",
                include_str!("../../../packaging/rubrics/bank.toml"),
            ),
            (
                "hospital.toml",
                include_str!("../../../packaging/rubrics/hospital.toml"),
            ),
        ] {
            let r = Rubric::parse(Path::new(name), text, DEFAULT_MIN_SIMILARITY).unwrap();
            assert!(r.rules.len() >= 6, "{name}");
            assert!(r.rules.iter().any(|r| r.critical), "{name}");
        }
    }

    #[test]
    fn malformed_rubrics_name_the_key() {
        let bad = |text: &str| {
            Rubric::parse(Path::new("x.toml"), text, DEFAULT_MIN_SIMILARITY)
                .unwrap_err()
                .key
        };
        assert_eq!(bad("name = \"x\"\nrules = []\n"), "rules");
        assert_eq!(
            bad("name = \"x\"\n[[rules]]\nid = \"a\"\nkind = \"required_phrase\"\n"),
            "rules[0].patterns"
        );
        assert_eq!(
            bad(
                "name = \"x\"\n[[rules]]\nid = \"a\"\nkind = \"forbidden_phrase\"\npatterns = [\"(\"]\n"
            ),
            "rules[0].patterns[0]"
        );
        assert_eq!(
            bad("name = \"x\"\n[[rules]]\nid = \"a\"\nkind = \"disclosure\"\npatterns = [\"x\"]\n"),
            "rules[0].within_turns"
        );
        assert_eq!(
            bad("name = \"x\"\n[[rules]]\nid = \"a\"\nkind = \"telepathy\"\n"),
            "(file)"
        );
        let e = Rubric::parse(
            Path::new("x.toml"),
            "name = \"x\"\n[[rules]]\nid = \"a\"\nkind = \"response_gap\"\nmax_gap_seconds = 5\n[[rules]]\nid = \"a\"\nkind = \"sentiment\"\n",
            DEFAULT_MIN_SIMILARITY,
        )
        .unwrap_err();
        assert_eq!(e.key, "rules[1].id");
        assert!(e.to_string().starts_with("x.toml: rules[1].id"));
    }
}
