use clap::{Args, Subcommand};
use confidant_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use serde_json::json;

use crate::output::{json, table};
use crate::{Cli, client};

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create a token; it is printed once and stored only as a hash.
    Create {
        /// bot, assist, qa, kb-editor or admin; repeat or comma-separate for several.
        #[arg(long = "role", required = true, value_delimiter = ',')]
        roles: Vec<String>,
        /// The tenant the token acts for (an admin token may only name its own).
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long, default_value = "")]
        tenant: String,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

#[derive(Args)]
pub struct AuditArgs {
    #[arg(long, default_value = "")]
    tenant: String,
    /// Only entries from the last N hours.
    #[arg(long)]
    hours: Option<u64>,
    #[arg(long, default_value_t = 100)]
    limit: i64,
}

fn when(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), in UTC.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub async fn run(cli: &Cli, cmd: &TokensCommand) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(client::connect(cli).await?);
    match cmd {
        TokensCommand::Create {
            roles,
            tenant,
            description,
        } => {
            let r = c
                .create_token(pb::CreateTokenRequest {
                    roles: roles.clone(),
                    tenant: tenant.clone(),
                    description: description.clone(),
                })
                .await?
                .into_inner();
            if cli.json {
                json(&json!({"id": r.id, "token": r.token, "tenant": r.tenant, "roles": r.roles}));
            } else {
                println!("id:     {}", r.id);
                println!("tenant: {}", r.tenant);
                println!("roles:  {}", r.roles.join(","));
                println!("token:  {}", r.token);
                eprintln!("Store the token now: it cannot be shown again.");
            }
        }
        TokensCommand::List { tenant } => {
            let tokens = c
                .list_tokens(pb::ListTokensRequest {
                    tenant: tenant.clone(),
                })
                .await?
                .into_inner()
                .tokens;
            if cli.json {
                json(&json!(tokens.iter().map(|t| json!({
                    "id": t.id, "tenant": t.tenant, "roles": t.roles, "description": t.description,
                    "created_at_ms": t.created_at_ms, "last_used_at_ms": t.last_used_at_ms,
                    "revoked_at_ms": t.revoked_at_ms,
                })).collect::<Vec<_>>()));
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.tenant.clone(),
                            t.roles.join(","),
                            when(t.created_at_ms),
                            when(t.last_used_at_ms),
                            when(t.revoked_at_ms),
                            t.description.clone(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "id",
                        "tenant",
                        "roles",
                        "created",
                        "last used",
                        "revoked",
                        "description",
                    ],
                    &rows,
                );
            }
        }
        TokensCommand::Revoke { id } => {
            c.revoke_token(pb::RevokeTokenRequest { id: id.clone() })
                .await?;
            if cli.json {
                json(&json!({"revoked": id}));
            } else {
                println!("revoked {id}");
            }
        }
    }
    Ok(())
}

pub async fn audit(cli: &Cli, args: &AuditArgs) -> anyhow::Result<()> {
    let mut c = AdminServiceClient::new(client::connect(cli).await?);
    let since_ms = match args.hours {
        Some(h) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            now - (h as i64) * 3_600_000
        }
        None => 0,
    };
    let records = c
        .list_audit(pb::ListAuditRequest {
            tenant: args.tenant.clone(),
            since_ms,
            limit: args.limit,
        })
        .await?
        .into_inner()
        .records;
    if cli.json {
        for r in &records {
            json(
                &json!({"at_ms": r.at_ms, "actor": r.actor, "tenant": r.tenant, "action": r.action,
                         "target": r.target, "detail": r.detail}),
            );
        }
    } else {
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                vec![
                    when(r.at_ms),
                    r.actor.clone(),
                    r.tenant.clone(),
                    r.action.clone(),
                    r.target.clone(),
                    r.detail.clone(),
                ]
            })
            .collect();
        table(
            &["at", "actor", "tenant", "action", "target", "detail"],
            &rows,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::when(0), "-");
        assert_eq!(super::when(1_764_000_000_000), "2025-11-24 16:00:00Z");
    }
}
