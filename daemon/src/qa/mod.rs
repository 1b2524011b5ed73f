//! QA scoring: every contact against its tenant's rubric. The transcript's turns are
//! embedded once (one batch), the rubric's exemplars once per rubric version; each rule
//! then looks at the turns it concerns and reports pass, fail or not applicable, with the
//! turns and words as evidence. `evaluate` is pure and tested here; `score` feeds it.

pub mod rubric;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use confidant_inference::InputKind;

use crate::app::App;
use crate::bot::{self, BotError};
use crate::store::QaRecord;
pub use rubric::{Kind, Position, Rubric, RubricError, Rule};

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub speaker: String,
    pub text: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub turn: u32,
    pub text: String,
    pub similarity: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleOutcome {
    pub id: String,
    pub kind: Kind,
    pub weight: f32,
    pub critical: bool,
    /// "pass", "fail" or "not_applicable".
    pub outcome: &'static str,
    pub evidence: Vec<Evidence>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub rubric: String,
    pub total: f64,
    pub critical_failed: bool,
    pub rules: Vec<RuleOutcome>,
    pub alerts: Vec<String>,
}

/// What the models said about the transcript.
pub struct Signals<'a> {
    /// One vector per turn.
    pub turns: &'a [Vec<f32>],
    /// One vector per exemplar, in `Rubric::exemplars` order.
    pub exemplars: &'a [Vec<f32>],
    /// Negative-sentiment probability per turn (customer turns), when a head is loaded.
    pub negative: Option<&'a [f32]>,
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// The indices of the turns a phrase rule looks at.
fn candidates(rule: &Rule, turns: &[Turn]) -> Vec<usize> {
    let of_speaker: Vec<usize> = (0..turns.len())
        .filter(|&i| turns[i].speaker == rule.speaker)
        .collect();
    let n = rule.within_turns as usize;
    let mut picked = match (rule.kind, rule.position) {
        (Kind::Resolution, _) | (_, Position::End) => {
            let n = if n == 0 { 2 } else { n };
            of_speaker[of_speaker.len().saturating_sub(n)..].to_vec()
        }
        (Kind::Disclosure, _) | (_, Position::Start) if n > 0 => {
            of_speaker.into_iter().take(n).collect()
        }
        _ => of_speaker,
    };
    if rule.kind == Kind::Disclosure && rule.within_seconds > 0 {
        let start = turns.first().map(|t| t.at_ms).unwrap_or(0);
        let limit = start + i64::from(rule.within_seconds) * 1000;
        let timed = turns.iter().all(|t| t.at_ms > 0);
        if timed {
            let by_time: Vec<usize> = (0..turns.len())
                .filter(|&i| turns[i].speaker == rule.speaker && turns[i].at_ms <= limit)
                .collect();
            if rule.within_turns == 0 {
                picked = by_time;
            } else {
                picked.retain(|i| by_time.contains(i));
            }
        }
    }
    picked
}

/// How a turn matches a phrase rule: a pattern (similarity 0) or the closest exemplar.
fn matches(
    rule: &Rule,
    first_exemplar: usize,
    text: &str,
    vector: &[f32],
    exemplars: &[Vec<f32>],
) -> Option<f32> {
    if rule.patterns.iter().any(|p| p.is_match(text)) {
        return Some(0.0);
    }
    let best = exemplars
        .iter()
        .skip(first_exemplar)
        .take(rule.exemplars.len())
        .map(|e| cosine(vector, e))
        .fold(f32::MIN, f32::max);
    (best >= rule.min_similarity).then_some(best)
}

/// Scores `turns` against `rubric`. `redact` masks the words quoted as evidence.
pub fn evaluate(
    rubric: &Rubric,
    turns: &[Turn],
    s: &Signals<'_>,
    redact: &dyn Fn(&str) -> String,
) -> Scored {
    let mut rules = Vec::new();
    let mut alerts = Vec::new();
    let mut first_exemplar = 0;
    for rule in &rubric.rules {
        let ev = |i: usize, similarity: f32| Evidence {
            turn: i as u32,
            text: redact(&turns[i].text),
            similarity,
        };
        let mut evidence = Vec::new();
        let (outcome, detail) = match rule.kind {
            Kind::RequiredPhrase | Kind::Disclosure | Kind::Resolution => {
                let cands = candidates(rule, turns);
                let hit = cands.iter().find_map(|&i| {
                    matches(
                        rule,
                        first_exemplar,
                        &turns[i].text,
                        &s.turns[i],
                        s.exemplars,
                    )
                    .map(|sim| (i, sim))
                });
                match hit {
                    Some((i, sim)) => {
                        evidence.push(ev(i, sim));
                        ("pass", format!("said in turn {i}"))
                    }
                    None if cands.is_empty() => (
                        "fail",
                        format!("no {} turn in the window the rule checks", rule.speaker),
                    ),
                    None => (
                        "fail",
                        format!(
                            "not found in the {} {} turns checked (min similarity {:.2})",
                            cands.len(),
                            rule.speaker,
                            rule.min_similarity
                        ),
                    ),
                }
            }
            Kind::ForbiddenPhrase => {
                for i in candidates(rule, turns) {
                    if let Some(sim) = matches(
                        rule,
                        first_exemplar,
                        &turns[i].text,
                        &s.turns[i],
                        s.exemplars,
                    ) {
                        evidence.push(ev(i, sim));
                    }
                }
                if evidence.is_empty() {
                    ("pass", "not said".into())
                } else {
                    alerts.push(format!(
                        "forbidden phrase ({}) in turn {}",
                        rule.id, evidence[0].turn
                    ));
                    ("fail", format!("said in {} turns", evidence.len()))
                }
            }
            Kind::ResponseGap => {
                let max = i64::from(rule.max_gap_seconds) * 1000;
                let mut pairs = 0;
                for (i, t) in turns.iter().enumerate() {
                    if t.speaker != "customer" || t.at_ms <= 0 {
                        continue;
                    }
                    // The agent's next turn answers it (later customer turns wait too).
                    let Some(j) = (i + 1..turns.len()).find(|&j| turns[j].speaker == "agent")
                    else {
                        continue;
                    };
                    if turns[j].at_ms <= 0 {
                        continue;
                    }
                    if i > 0 && turns[i - 1].speaker == "customer" {
                        continue;
                    }
                    pairs += 1;
                    let gap = turns[j].at_ms - t.at_ms;
                    if gap > max {
                        evidence.push(ev(j, 0.0));
                    }
                }
                if pairs == 0 {
                    ("not_applicable", "no timed customer→agent exchanges".into())
                } else if evidence.is_empty() {
                    (
                        "pass",
                        format!("{pairs} answers, all within {} s", rule.max_gap_seconds),
                    )
                } else {
                    (
                        "fail",
                        format!(
                            "{} of {pairs} answers took longer than {} s",
                            evidence.len(),
                            rule.max_gap_seconds
                        ),
                    )
                }
            }
            Kind::Sentiment => {
                let customer: Vec<usize> = (0..turns.len())
                    .filter(|&i| turns[i].speaker == "customer")
                    .collect();
                match (s.negative, customer.first(), customer.last()) {
                    (Some(neg), Some(&a), Some(&b)) if a != b => {
                        let (start, end) = (neg[a], neg[b]);
                        evidence.push(ev(a, 0.0));
                        evidence.push(ev(b, 0.0));
                        let d = format!(
                            "negative {start:.2} at the start, {end:.2} at the end (tolerance {:.2})",
                            rule.tolerance
                        );
                        if end <= start + rule.tolerance {
                            ("pass", d)
                        } else {
                            ("fail", d)
                        }
                    }
                    (None, _, _) => ("not_applicable", "no sentiment head is loaded".into()),
                    _ => ("not_applicable", "fewer than two customer turns".into()),
                }
            }
        };
        if outcome == "fail" && rule.critical {
            alerts.push(format!("critical rule {} failed", rule.id));
        }
        first_exemplar += rule.exemplars.len();
        rules.push(RuleOutcome {
            id: rule.id.clone(),
            kind: rule.kind,
            weight: rule.weight,
            critical: rule.critical,
            outcome,
            evidence,
            detail: if rule.message.is_empty() || outcome != "fail" {
                detail
            } else {
                format!("{}: {detail}", rule.message)
            },
        });
    }
    let applicable: f32 = rules
        .iter()
        .filter(|r| r.outcome != "not_applicable")
        .map(|r| r.weight)
        .sum();
    let passed: f32 = rules
        .iter()
        .filter(|r| r.outcome == "pass")
        .map(|r| r.weight)
        .sum();
    let critical_failed = rules.iter().any(|r| r.critical && r.outcome == "fail");
    let total = if critical_failed {
        0.0
    } else if applicable == 0.0 {
        100.0
    } else {
        (f64::from(passed) / f64::from(applicable) * 1000.0).round() / 10.0
    };
    Scored {
        rubric: rubric.name.clone(),
        total,
        critical_failed,
        rules,
        alerts,
    }
}

struct Loaded {
    modified: Option<SystemTime>,
    rubric: Arc<Rubric>,
    exemplars: Arc<Vec<Vec<f32>>>,
}

/// Rubrics by file, re-read when the file changes.
#[derive(Default)]
pub struct Rubrics {
    loaded: Mutex<HashMap<PathBuf, Arc<Loaded>>>,
}

impl Rubrics {
    async fn get(&self, app: &App, tenant: &str) -> Result<Arc<Loaded>, BotError> {
        let dir = app.config().qa.rubrics_dir.clone();
        let own = dir.join(format!("{tenant}.toml"));
        let path = if own.is_file() {
            own
        } else {
            dir.join("default.toml")
        };
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if let Ok(l) = self.loaded.lock()
            && let Some(hit) = l.get(&path)
            && hit.modified == modified
        {
            return Ok(hit.clone());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            BotError::Precondition(format!(
                "no rubric for tenant {tenant:?}: {} ({e}); write <qa.rubrics_dir>/{tenant}.toml or default.toml (examples in packaging/rubrics/)",
                path.display()
            ))
        })?;
        let similarity = app
            .batcher()
            .current()
            .manifest()
            .scores
            .exemplar
            .unwrap_or(rubric::DEFAULT_MIN_SIMILARITY);
        let rubric = Rubric::parse(&path, &text, similarity)
            .map_err(|e| BotError::Precondition(e.to_string()))?;
        let texts = rubric.exemplars();
        let mut exemplars = Vec::with_capacity(texts.len());
        for group in texts.chunks(64) {
            exemplars.extend(
                app.batcher()
                    .embed(group, InputKind::Query)
                    .await?
                    .into_iter()
                    .map(|e| e.vector),
            );
        }
        let loaded = Arc::new(Loaded {
            modified,
            rubric: Arc::new(rubric),
            exemplars: Arc::new(exemplars),
        });
        if let Ok(mut l) = self.loaded.lock() {
            l.insert(path, loaded.clone());
        }
        Ok(loaded)
    }
}

fn validate(app: &App, turns: &[Turn]) -> Result<(), BotError> {
    if turns.is_empty() {
        return Err(bot::invalid(
            "turns",
            "a transcript needs at least one turn",
        ));
    }
    let mut last = 0;
    for (i, t) in turns.iter().enumerate() {
        if t.speaker != "agent" && t.speaker != "customer" {
            return Err(bot::invalid(
                format!("turns[{i}].speaker"),
                format!("{:?}: expected \"customer\" or \"agent\"", t.speaker),
            ));
        }
        bot::check_text(app, &format!("turns[{i}].text"), &t.text)?;
        if t.at_ms < 0 || (t.at_ms > 0 && t.at_ms < last) {
            return Err(bot::invalid(
                format!("turns[{i}].at_ms"),
                "turns must come in time order".to_string(),
            ));
        }
        if t.at_ms > 0 {
            last = t.at_ms;
        }
    }
    Ok(())
}

/// Who and what a scored contact was, for the stored result.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    pub conversation_id: String,
    pub customer_id: String,
    pub agent_id: String,
    pub team: String,
}

/// Scores one transcript for `tenant` and stores the result (scores and rule outcomes,
/// no text) when the contact has a conversation id.
pub async fn score(
    app: &App,
    tenant: &str,
    contact: &Contact,
    turns: &[Turn],
) -> Result<Scored, BotError> {
    if !contact.conversation_id.is_empty() {
        bot::check_id("conversation_id", &contact.conversation_id)?;
    }
    for (field, v) in [
        ("customer_id", &contact.customer_id),
        ("agent_id", &contact.agent_id),
        ("team", &contact.team),
    ] {
        if v.chars().count() > bot::MAX_ID_CHARS {
            return Err(bot::invalid(
                field,
                format!("at most {} characters", bot::MAX_ID_CHARS),
            ));
        }
    }
    validate(app, turns)?;
    let loaded = app.rubrics().get(app, tenant).await?;
    let texts: Vec<String> = turns.iter().map(|t| t.text.clone()).collect();
    let mut vectors = Vec::with_capacity(texts.len());
    for group in texts.chunks(64) {
        vectors.extend(
            app.batcher()
                .embed(group, InputKind::Query)
                .await?
                .into_iter()
                .map(|e| e.vector),
        );
    }
    let head = app.config().qa.sentiment_classifier.clone();
    // The customer's turns go to the sentiment head together (a head with its own
    // encoder embeds them in a few jobs, not one job a turn).
    let customer: Vec<usize> = (0..turns.len())
        .filter(|&i| turns[i].speaker == "customer")
        .collect();
    let negative: Option<Vec<f32>> = if app.classifiers().get(&head).is_ok() {
        let mut out = vec![0.0; turns.len()];
        for group in customer.chunks(64) {
            let texts: Vec<String> = group.iter().map(|&i| texts[i].clone()).collect();
            let vs: Vec<Vec<f32>> = group.iter().map(|&i| vectors[i].clone()).collect();
            if let Some(p) = bot::negative_sentiments(app, &head, &texts, &vs).await? {
                for (&i, p) in group.iter().zip(p) {
                    out[i] = p;
                }
            }
        }
        Some(out)
    } else {
        None
    };
    let policies = app.policies();
    let redact = |s: &str| policies.redactor.redact(s);
    let scored = evaluate(
        &loaded.rubric,
        turns,
        &Signals {
            turns: &vectors,
            exemplars: &loaded.exemplars,
            negative: negative.as_deref(),
        },
        &redact,
    );
    metrics::counter!("confidant_qa_scored_total", "critical_failed" => if scored.critical_failed { "true" } else { "false" })
        .increment(1);
    for r in &scored.rules {
        if r.outcome == "fail" {
            metrics::counter!("confidant_qa_rule_failures_total", "rule" => r.id.clone())
                .increment(1);
        }
    }
    if !contact.conversation_id.is_empty() {
        app.store()
            .qa_record(
                tenant,
                &QaRecord {
                    conversation_id: contact.conversation_id.clone(),
                    customer_id: contact.customer_id.clone(),
                    agent_id: contact.agent_id.clone(),
                    team: contact.team.clone(),
                    rubric: scored.rubric.clone(),
                    total: scored.total,
                    critical_failed: scored.critical_failed,
                    outcomes: scored
                        .rules
                        .iter()
                        .map(|r| (r.id.clone(), r.outcome.to_string()))
                        .collect(),
                },
            )
            .await?;
    }
    Ok(scored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rubric(text: &str) -> Rubric {
        Rubric::parse(Path::new("t.toml"), text, rubric::DEFAULT_MIN_SIMILARITY).unwrap()
    }

    fn t(speaker: &str, text: &str, at_ms: i64) -> Turn {
        Turn {
            speaker: speaker.into(),
            text: text.into(),
            at_ms,
        }
    }

    const RUBRIC: &str = r#"
name = "test"
[[rules]]
id = "greeting"
kind = "required_phrase"
position = "start"
within_turns = 1
patterns = ["(?i)hello"]
weight = 10
[[rules]]
id = "no_guarantees"
kind = "forbidden_phrase"
patterns = ["(?i)guaranteed"]
critical = true
[[rules]]
id = "recording"
kind = "disclosure"
within_turns = 2
patterns = ["(?i)recorded"]
weight = 5
[[rules]]
id = "gap"
kind = "response_gap"
max_gap_seconds = 30
weight = 5
[[rules]]
id = "mood"
kind = "sentiment"
weight = 5
[[rules]]
id = "solved"
kind = "resolution"
patterns = ["(?i)that solved it|thanks, that's all"]
weight = 5
"#;

    fn run(turns: &[Turn], negative: Option<&[f32]>) -> Scored {
        let r = rubric(RUBRIC);
        let vectors = vec![vec![1.0, 0.0]; turns.len()];
        evaluate(
            &r,
            turns,
            &Signals {
                turns: &vectors,
                exemplars: &[],
                negative,
            },
            &|s: &str| s.replace("4111", "[X]"),
        )
    }

    fn outcome<'a>(s: &'a Scored, id: &str) -> &'a RuleOutcome {
        s.rules.iter().find(|r| r.id == id).unwrap()
    }

    #[test]
    fn a_good_contact_passes_with_evidence() {
        let turns = [
            t("agent", "Hello, this call is recorded", 1_000),
            t("customer", "My card 4111 is blocked", 5_000),
            t("agent", "I have unblocked it", 20_000),
            t("customer", "Great, that solved it", 25_000),
        ];
        let s = run(&turns, Some(&[0.0, 0.6, 0.0, 0.1]));
        assert_eq!(s.total, 100.0, "{s:?}");
        assert!(!s.critical_failed && s.alerts.is_empty());
        let g = outcome(&s, "greeting");
        assert_eq!(g.evidence[0].turn, 0);
        assert_eq!(outcome(&s, "solved").evidence[0].turn, 3);
        let m = outcome(&s, "mood");
        assert_eq!(m.outcome, "pass");
        assert_eq!(
            m.evidence[0].text, "My card [X] is blocked",
            "evidence is redacted"
        );
    }

    #[test]
    fn failures_weights_critical_rules_and_not_applicable() {
        // No greeting first, the disclosure too late, a slow answer, mood worse, no
        // resolution: 0 of 30 applicable weight... plus a critical forbidden phrase.
        let turns = [
            t("agent", "Yes?", 1_000),
            t("customer", "I am unhappy", 2_000),
            t("agent", "Returns are guaranteed", 90_000),
            t("agent", "By the way this call is recorded", 91_000),
            t("customer", "Whatever", 95_000),
        ];
        let s = run(&turns, Some(&[0.0, 0.3, 0.0, 0.0, 0.9]));
        for id in [
            "greeting",
            "no_guarantees",
            "recording",
            "gap",
            "mood",
            "solved",
        ] {
            assert_eq!(outcome(&s, id).outcome, "fail", "{id}: {s:?}");
        }
        assert!(s.critical_failed);
        assert_eq!(s.total, 0.0);
        assert!(
            s.alerts.iter().any(|a| a.contains("no_guarantees")),
            "{:?}",
            s.alerts
        );
        assert_eq!(outcome(&s, "no_guarantees").evidence[0].turn, 2);
        assert_eq!(outcome(&s, "gap").evidence[0].turn, 2);

        // Without timestamps and a sentiment head, those rules do not count.
        let turns = [
            t("agent", "Hello, this call is recorded", 0),
            t("customer", "Thanks, that's all", 0),
        ];
        let s = run(&turns, None);
        assert_eq!(outcome(&s, "gap").outcome, "not_applicable");
        assert_eq!(outcome(&s, "mood").outcome, "not_applicable");
        assert_eq!(s.total, 100.0, "{s:?}");
        // A partial pass is weighted: greeting 10 + no guarantees 1 of 21 applicable
        // (the disclosure and the resolution fail).
        let turns = [
            t("agent", "Hello", 0),
            t("customer", "ok", 0),
            t("agent", "bye", 0),
        ];
        let s = run(&turns, None);
        assert_eq!(s.total, 52.4, "{s:?}");
    }

    #[test]
    fn exemplars_match_by_similarity() {
        let r = rubric(
            r#"
name = "x"
[[rules]]
id = "close"
kind = "required_phrase"
exemplars = ["anything else I can help with"]
min_similarity = 0.9
"#,
        );
        let turns = [t("agent", "something", 0), t("agent", "other", 0)];
        let vectors = vec![vec![0.0, 1.0], vec![1.0, 0.05]];
        let s = evaluate(
            &r,
            &turns,
            &Signals {
                turns: &vectors,
                exemplars: &[vec![1.0, 0.0]],
                negative: None,
            },
            &|s: &str| s.to_string(),
        );
        let o = &s.rules[0];
        assert_eq!(o.outcome, "pass");
        assert_eq!(o.evidence[0].turn, 1);
        assert!(o.evidence[0].similarity > 0.99);
    }
}
