//! `Route`: runs the models on a new contact's first message, applies the policy, stores
//! the advice (so that `RouteOutcome` can score it) and counts it.

use crate::app::App;
use crate::bot::{self, BotError, Customer, IntentGuess};
use crate::store::RouteRecord;

use super::Priority;

#[derive(Debug, Clone, Default)]
pub struct RouteInput {
    pub tenant: String,
    pub contact_id: String,
    pub text: String,
    pub lang: String,
    pub customer: Customer,
}

#[derive(Debug, Clone)]
pub struct RouteOutput {
    pub intent: Option<IntentGuess>,
    pub queue: String,
    pub queue_reason: String,
    pub priority: Priority,
    pub risk: String,
}

pub async fn advise(app: &App, input: RouteInput) -> Result<RouteOutput, BotError> {
    bot::check_id("contact_id", &input.contact_id)?;
    bot::check_text(app, "text", &input.text)?;
    bot::language(app, &input.lang, &input.text)?;
    let policies = app.policies();
    let r = &policies.routing;
    let vector = bot::embed(app, &input.text).await?;
    let intent = bot::intent(app, &r.intent_classifier, &input.text, &vector).await?;
    let label = intent
        .as_ref()
        .filter(|i| !i.label.is_empty())
        .map(|i| (i.label.as_str(), i.probability));
    let risk = r
        .classify_risk(&input.text, label.map(|l| l.0))
        .map(|(r, _)| r);
    let (queue, queue_reason) = r.queue(risk, label);
    let negative =
        bot::negative_sentiment(app, &r.sentiment_classifier, &input.text, &vector).await?;
    let priority = r.priority(
        risk,
        &super::Signals {
            tier: &input.customer.tier,
            waited_seconds: input.customer.waited_seconds,
            negative,
        },
    );
    let risk = risk.map(|r| r.name.clone()).unwrap_or_default();
    app.store()
        .route_record(
            &input.tenant,
            &RouteRecord {
                contact_id: input.contact_id.clone(),
                customer_id: input.customer.customer_id.clone(),
                intent: label.map(|l| l.0.to_string()).unwrap_or_default(),
                risk: risk.clone(),
                queue: queue.clone(),
                priority: i64::from(priority.value),
            },
        )
        .await?;
    metrics::counter!("confidant_routing_decisions_total", "queue" => queue.clone()).increment(1);
    Ok(RouteOutput {
        intent,
        queue,
        queue_reason,
        priority,
        risk,
    })
}

/// Where the contact was finally handled; returns whether the advice was right first time.
pub async fn outcome(
    app: &App,
    tenant: &str,
    contact_id: &str,
    handled_queue: &str,
) -> Result<bool, BotError> {
    bot::check_id("contact_id", contact_id)?;
    if handled_queue.trim().is_empty() {
        return Err(bot::invalid("handled_queue", "must not be empty"));
    }
    let right = app
        .store()
        .route_outcome(tenant, contact_id, handled_queue)
        .await?;
    metrics::counter!("confidant_routing_outcomes_total", "first_try" => if right { "true" } else { "false" })
        .increment(1);
    Ok(right)
}
