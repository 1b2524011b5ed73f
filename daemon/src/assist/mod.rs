//! Live agent assist: one `Session` per stream follows a conversation turn by turn and
//! says what is new for the agent. Customer turns run the model once (articles, intent,
//! sentiment share the vector); agent turns are matched against the compliance rules and
//! the checklist with regular expressions only, so they cost next to nothing. Nothing is
//! suggested twice in a session.

use std::collections::{BTreeMap, HashSet};

use confidant_inference::Scores;
use regex::Regex;

use crate::app::App;
use crate::bot::{self, BotError};
use crate::config::{AssistConfig, PhraseRule};
use crate::kb::{Mode, SearchParams};
use crate::routing::{PolicyError, compile};
use crate::store::now_ms;

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    pattern: Regex,
    message: String,
    within_agent_turns: u32,
}

#[derive(Debug, Clone)]
struct Item {
    id: String,
    label: String,
    patterns: Vec<Regex>,
}

/// `[assist]`, compiled.
#[derive(Debug, Clone)]
pub struct AssistPolicy {
    max_articles: usize,
    min_score: f32,
    intent_classifier: String,
    sentiment_classifier: String,
    negative_alert: f32,
    checklists: BTreeMap<String, Vec<Item>>,
    forbidden: Vec<Rule>,
    disclosures: Vec<Rule>,
}

fn rules(key: &str, list: &[PhraseRule]) -> Result<Vec<Rule>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            if r.name.trim().is_empty() {
                return Err(PolicyError {
                    key: format!("assist.{key}[{i}].name"),
                    message: "must not be empty".into(),
                });
            }
            Ok(Rule {
                name: r.name.clone(),
                pattern: compile(format!("assist.{key}[{i}].pattern"), &r.pattern)?,
                message: r.message.clone(),
                within_agent_turns: r.within_agent_turns.max(1),
            })
        })
        .collect()
}

impl AssistPolicy {
    pub fn min_score(&self) -> f32 {
        self.min_score
    }

    /// `scores`: the serving model's measured thresholds, used where the config sets none.
    pub fn new(c: &AssistConfig, scores: &Scores) -> Result<Self, PolicyError> {
        let min_score = c.min_score.or(scores.suggest).unwrap_or(0.5);
        for (key, v) in [
            ("min_score", min_score),
            ("negative_alert", c.negative_alert),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(PolicyError {
                    key: format!("assist.{key}"),
                    message: "must be between 0 and 1".into(),
                });
            }
        }
        let mut checklists = BTreeMap::new();
        for (intent, items) in &c.checklists {
            let mut out = Vec::new();
            for (i, it) in items.iter().enumerate() {
                let key = |k: &str| format!("assist.checklists.{intent}[{i}].{k}");
                if it.id.is_empty() || it.patterns.is_empty() {
                    return Err(PolicyError {
                        key: key("patterns"),
                        message: "an item needs an id and at least one pattern".into(),
                    });
                }
                out.push(Item {
                    id: it.id.clone(),
                    label: it.label.clone(),
                    patterns: it
                        .patterns
                        .iter()
                        .enumerate()
                        .map(|(j, p)| compile(key(&format!("patterns[{j}]")), p))
                        .collect::<Result<_, _>>()?,
                });
            }
            checklists.insert(intent.clone(), out);
        }
        Ok(Self {
            max_articles: c.max_articles,
            min_score,
            intent_classifier: c.intent_classifier.clone(),
            sentiment_classifier: c.sentiment_classifier.clone(),
            negative_alert: c.negative_alert,
            checklists,
            forbidden: rules("forbidden", &c.forbidden)?,
            disclosures: rules("disclosures", &c.disclosures)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChecklistItem {
    pub id: String,
    pub label: String,
    /// The agent turn that covered it.
    pub done_at: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Article {
        article_id: String,
        version: i64,
        title: String,
        answer: String,
        confidence: f32,
    },
    Checklist {
        intent: String,
        items: Vec<ChecklistItem>,
    },
    Warning {
        kind: &'static str,
        rule: String,
        message: String,
        evidence: String,
    },
    Sentiment {
        previous: f32,
        current: f32,
    },
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Article { .. } => "article",
            Kind::Checklist { .. } => "checklist",
            Kind::Warning { .. } => "warning",
            Kind::Sentiment { .. } => "sentiment",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    pub kind: Kind,
    pub reason: String,
}

/// One stream's state.
#[derive(Debug, Default)]
pub struct Session {
    pub tenant: String,
    pub conversation_id: String,
    lang: String,
    channel: String,
    turns: u32,
    agent_turns: u32,
    last_at: i64,
    suggested: HashSet<String>,
    intent: Option<String>,
    checklist: Vec<ChecklistItem>,
    warned: HashSet<String>,
    disclosed: HashSet<String>,
    negative: Option<f32>,
}

impl Session {
    pub fn start(
        app: &App,
        tenant: String,
        conversation_id: String,
        lang: String,
        channel: String,
    ) -> Result<Self, BotError> {
        bot::check_id("start.conversation_id", &conversation_id)?;
        if !lang.is_empty() {
            bot::language(app, &lang, "").map_err(|_| {
                bot::invalid(
                    "start.lang",
                    format!("{lang:?} is not a configured language (kb.languages)"),
                )
            })?;
        }
        Ok(Self {
            tenant,
            conversation_id,
            lang,
            channel,
            ..Default::default()
        })
    }

    pub fn turns(&self) -> u32 {
        self.turns
    }

    /// One turn: what is new for the agent. `at_ms` 0 means now.
    pub async fn turn(
        &mut self,
        app: &App,
        speaker: &str,
        text: &str,
        at_ms: i64,
    ) -> Result<Vec<Suggestion>, BotError> {
        bot::check_text(app, "turn.text", text)?;
        let at = if at_ms == 0 { now_ms() } else { at_ms };
        if at < self.last_at {
            return Err(bot::invalid(
                "turn.at_ms",
                format!(
                    "{at} is before the previous turn ({}): turns must come in order",
                    self.last_at
                ),
            ));
        }
        let out = match speaker {
            "customer" => self.customer(app, text).await?,
            "agent" => self.agent(app, text),
            other => {
                return Err(bot::invalid(
                    "turn.speaker",
                    format!("{other:?}: expected \"customer\" or \"agent\""),
                ));
            }
        };
        self.last_at = at;
        self.turns += 1;
        for s in &out {
            metrics::counter!("confidant_assist_suggestions_total", "kind" => s.kind.name())
                .increment(1);
        }
        Ok(out)
    }

    async fn customer(&mut self, app: &App, text: &str) -> Result<Vec<Suggestion>, BotError> {
        let policies = app.policies();
        let p = &policies.assist;
        let lang = if self.lang.is_empty() {
            bot::language(app, "", text)?
        } else {
            self.lang.clone()
        };
        let vector = bot::embed(app, text).await?;
        let mut out = Vec::new();
        if self.intent.is_none()
            && let Some(guess) = bot::intent(app, &p.intent_classifier, text, &vector).await?
            && !guess.label.is_empty()
            && let Some(items) = p.checklists.get(&guess.label)
        {
            self.checklist = items
                .iter()
                .map(|i| ChecklistItem {
                    id: i.id.clone(),
                    label: i.label.clone(),
                    done_at: None,
                })
                .collect();
            out.push(Suggestion {
                kind: Kind::Checklist {
                    intent: guess.label.clone(),
                    items: self.checklist.clone(),
                },
                reason: format!(
                    "intent {} ({:.2}) has a checklist (assist.checklists)",
                    guess.label, guess.probability
                ),
            });
            self.intent = Some(guess.label);
        }
        let results = app
            .kb()
            .search_with(
                &SearchParams {
                    tenant: self.tenant.clone(),
                    text: text.to_string(),
                    lang: Some(lang),
                    channel: (!self.channel.is_empty()).then(|| self.channel.clone()),
                    limit: p.max_articles + self.suggested.len().min(10),
                    mode: Mode::Hybrid,
                    at_ms: 0,
                },
                vector.clone(),
            )
            .await?;
        let mut added = 0;
        for r in results {
            let score = r.hit.dense.map(|s| s.score).unwrap_or(0.0);
            if added == p.max_articles || score < p.min_score {
                continue;
            }
            if !self.suggested.insert(r.article.id.clone()) {
                continue;
            }
            added += 1;
            out.push(Suggestion {
                reason: format!(
                    "the customer's words match {:?} at {score:.2}",
                    r.matched.text.chars().take(80).collect::<String>()
                ),
                kind: Kind::Article {
                    article_id: r.article.id,
                    version: r.article.version,
                    title: r.article.title,
                    answer: r.article.answer,
                    confidence: score,
                },
            });
        }
        if let Some(current) =
            bot::negative_sentiment(app, &p.sentiment_classifier, text, &vector).await?
        {
            let previous = self.negative.unwrap_or(0.0);
            if current >= p.negative_alert && previous < p.negative_alert {
                out.push(Suggestion {
                    kind: Kind::Sentiment { previous, current },
                    reason: format!(
                        "negative sentiment rose from {previous:.2} to {current:.2} (assist.negative_alert {:.2})",
                        p.negative_alert
                    ),
                });
            }
            self.negative = Some(current);
        }
        Ok(out)
    }

    fn agent(&mut self, app: &App, text: &str) -> Vec<Suggestion> {
        let policies = app.policies();
        let p = &policies.assist;
        let turn = self.turns;
        self.agent_turns += 1;
        let mut out = Vec::new();
        for r in &p.forbidden {
            if let Some(m) = r.pattern.find(text)
                && self.warned.insert(format!("forbidden:{}", r.name))
            {
                out.push(Suggestion {
                    kind: Kind::Warning {
                        kind: "forbidden_phrase",
                        rule: r.name.clone(),
                        message: r.message.clone(),
                        evidence: policies.redactor.redact(m.as_str()),
                    },
                    reason: format!("agent turn {turn} matches assist.forbidden {}", r.name),
                });
            }
        }
        for r in &p.disclosures {
            if r.pattern.is_match(text) {
                self.disclosed.insert(r.name.clone());
            }
            if !self.disclosed.contains(&r.name)
                && self.agent_turns >= r.within_agent_turns
                && self.warned.insert(format!("disclosure:{}", r.name))
            {
                out.push(Suggestion {
                    kind: Kind::Warning {
                        kind: "missing_disclosure",
                        rule: r.name.clone(),
                        message: r.message.clone(),
                        evidence: String::new(),
                    },
                    reason: format!(
                        "not said in the agent's first {} turns (assist.disclosures {})",
                        r.within_agent_turns, r.name
                    ),
                });
            }
        }
        if let Some(intent) = &self.intent
            && let Some(items) = p.checklists.get(intent)
        {
            let mut ticked = Vec::new();
            for (state, item) in self.checklist.iter_mut().zip(items) {
                if state.done_at.is_none() && item.patterns.iter().any(|re| re.is_match(text)) {
                    state.done_at = Some(turn);
                    ticked.push(item.id.clone());
                }
            }
            if !ticked.is_empty() {
                out.push(Suggestion {
                    kind: Kind::Checklist {
                        intent: intent.clone(),
                        items: self.checklist.clone(),
                    },
                    reason: format!("agent turn {turn} covered {}", ticked.join(", ")),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_compile_and_bad_ones_name_the_key() {
        AssistPolicy::new(&AssistConfig::default(), &Scores::default()).unwrap();
        let mut c = AssistConfig::default();
        c.forbidden[1].pattern = "(".into();
        assert_eq!(
            AssistPolicy::new(&c, &Scores::default()).unwrap_err().key,
            "assist.forbidden[1].pattern"
        );
        let mut c = AssistConfig::default();
        if let Some(items) = c.checklists.get_mut("lost_card") {
            items[2].patterns = vec!["[".into()];
        }
        assert_eq!(
            AssistPolicy::new(&c, &Scores::default()).unwrap_err().key,
            "assist.checklists.lost_card[2].patterns[0]"
        );
    }

    #[test]
    fn default_phrases_in_english_and_chinese() {
        let p = AssistPolicy::new(&AssistConfig::default(), &Scores::default()).unwrap();
        let f = |t: &str| p.forbidden.iter().any(|r| r.pattern.is_match(t));
        assert!(f("This fund has guaranteed returns"));
        assert!(f("这个产品保证收益"));
        assert!(f("Please tell me your PIN"));
        assert!(!f("Please never tell anyone your PIN"));
        let d = |t: &str| p.disclosures[0].pattern.is_match(t);
        assert!(d("Hello, this call is recorded for quality purposes"));
        assert!(d("您好，本次通话将被录音"));
        assert!(!d("Hello, how can I help?"));
    }
}
