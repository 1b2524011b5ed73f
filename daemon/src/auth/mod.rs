//! Identities, roles and tenants. Callers present `authorization: Bearer <token>`; the
//! token's hash is looked up in an in-memory cache of the `api_tokens` table (refreshed
//! every few seconds, so revocations on another daemon sharing PostgreSQL take effect
//! too). Connections over the local Unix socket are the site operator: every role, every
//! tenant, identified by the peer's uid. The tenant always comes from the identity,
//! never from a request body.

mod cache;

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::service::Interceptor;
use tonic::transport::server::UdsConnectInfo;

pub use cache::TokenCache;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Bot,
    Assist,
    Qa,
    KbEditor,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Bot,
        Role::Assist,
        Role::Qa,
        Role::KbEditor,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bot => "bot",
            Role::Assist => "assist",
            Role::Qa => "qa",
            Role::KbEditor => "kb-editor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: expected bot, assist, qa, kb-editor or admin")
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
}

/// Who is calling. `tenant` is `None` only for the local operator (Unix socket).
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub actor: String,
    pub tenant: Option<String>,
    pub roles: Vec<Role>,
}

impl Identity {
    pub fn local(uid: Option<u32>) -> Self {
        Self {
            actor: match uid {
                Some(u) => format!("local:uid={u}"),
                None => "local".into(),
            },
            tenant: None,
            roles: Role::ALL.to_vec(),
        }
    }

    pub fn is_local(&self) -> bool {
        self.tenant.is_none()
    }

    pub fn require(&self, role: Role) -> Result<(), AuthError> {
        if self.roles.contains(&role) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied(format!(
                "this call needs the {role} role"
            )))
        }
    }

    pub fn require_any(&self, roles: &[Role]) -> Result<(), AuthError> {
        if roles.iter().any(|r| self.roles.contains(r)) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(AuthError::PermissionDenied(format!(
            "this call needs one of the roles {}",
            names.join(", ")
        )))
    }

    /// The tenant a call acts on: a token's own tenant (a different one named in the
    /// request is refused), or, for the local operator, the one the request names.
    pub fn scope(&self, requested: &str) -> Result<Option<String>, AuthError> {
        match &self.tenant {
            Some(own) if requested.is_empty() || requested == own => Ok(Some(own.clone())),
            Some(_) => Err(AuthError::PermissionDenied(format!(
                "tenant {requested:?} is not this token's tenant"
            ))),
            None if requested.is_empty() => Ok(None),
            None => Ok(Some(requested.to_string())),
        }
    }
}

/// Reads the caller's identity that the interceptor attached.
pub fn identity<T>(req: &tonic::Request<T>) -> Result<Identity, AuthError> {
    req.extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| AuthError::Unauthenticated("no credentials".into()))
}

pub const TOKEN_PREFIX: &str = "cfd_";

/// A new token: (id, secret). The secret carries 256 random bits and is shown once.
pub fn generate_token() -> Result<(String, String), getrandom::Error> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id)?;
    getrandom::fill(&mut secret)?;
    Ok((
        hex::encode(id),
        format!("{TOKEN_PREFIX}{}", hex::encode(secret)),
    ))
}

pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The tonic interceptor in front of every confidant.v1 service.
#[derive(Clone)]
pub struct Authenticator {
    cache: std::sync::Arc<TokenCache>,
}

impl Authenticator {
    pub fn new(cache: std::sync::Arc<TokenCache>) -> Self {
        Self { cache }
    }
}

fn reject(reason: &'static str, message: &str) -> Status {
    metrics::counter!("confidant_auth_failures_total", "reason" => reason).increment(1);
    Status::unauthenticated(message)
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(info) = req.extensions().get::<UdsConnectInfo>() {
            let uid = info.peer_cred.map(|c| c.uid());
            req.extensions_mut().insert(Identity::local(uid));
            return Ok(req);
        }
        let Some(value) = req.metadata().get("authorization") else {
            return Err(reject("missing", "missing authorization: Bearer <token>"));
        };
        let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
            return Err(reject(
                "malformed",
                "authorization must be \"Bearer <token>\"",
            ));
        };
        match self.cache.lookup(token.trim()) {
            Some(identity) => {
                req.extensions_mut().insert(identity);
                Ok(req)
            }
            None => Err(reject("invalid", "invalid or revoked token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_scopes_hold() {
        assert_eq!("kb-editor".parse::<Role>(), Ok(Role::KbEditor));
        assert!("root".parse::<Role>().is_err());
        let tok = Identity {
            actor: "token:x".into(),
            tenant: Some("bank1".into()),
            roles: vec![Role::Bot],
        };
        assert!(tok.require(Role::Bot).is_ok());
        assert!(matches!(
            tok.require(Role::Admin),
            Err(AuthError::PermissionDenied(_))
        ));
        assert_eq!(tok.scope("").unwrap(), Some("bank1".into()));
        assert_eq!(tok.scope("bank1").unwrap(), Some("bank1".into()));
        assert!(tok.scope("bank2").is_err());
        let local = Identity::local(Some(0));
        assert_eq!(local.scope("bank2").unwrap(), Some("bank2".into()));
        assert_eq!(local.scope("").unwrap(), None);
    }

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let (id1, s1) = generate_token().unwrap();
        let (id2, s2) = generate_token().unwrap();
        assert_ne!(id1, id2);
        assert_ne!(s1, s2);
        assert!(s1.starts_with(TOKEN_PREFIX) && s1.len() == 4 + 64);
        assert_eq!(hash_token(&s1), hash_token(&s1));
        assert_ne!(hash_token(&s1), hash_token(&s2));
    }
}
