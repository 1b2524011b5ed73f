//! Test support: the same storage suite runs on SQLite and on PostgreSQL. PostgreSQL is
//! used at CONFIDANT_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test),
//! each test in a schema of its own; where none answers, the tests say SKIPPED loudly.

use super::Store;

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

pub struct TestDb {
    pub name: &'static str,
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    schema: Option<(String, String)>,
}

impl TestDb {
    pub async fn drop_schema(self) {
        self.store.close().await;
        if let Some((url, schema)) = self.schema
            && let Ok(admin) = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&admin)
            .await;
        }
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

pub fn pg_url() -> String {
    std::env::var("CONFIDANT_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.to_string())
}

/// A fresh PostgreSQL schema as a `postgres://` URL, or `None` with a loud SKIPPED.
pub async fn pg_schema_url(test: &str) -> Option<(String, String, String)> {
    sqlx::any::install_default_drivers();
    let url = pg_url();
    let admin = match sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(3))
        .connect(&url)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIPPED (PostgreSQL): {test}: no server at {url}: {e}");
            return None;
        }
    };
    let schema = format!("confidant_test_{}", random_suffix());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .ok()?;
    admin.close().await;
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    Some((scoped, url, schema))
}

/// SQLite always; PostgreSQL where a server answers.
pub async fn backends(test: &str) -> Vec<TestDb> {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("confidant.db").display());
    let mut out = vec![TestDb {
        name: "sqlite",
        store: Store::open(&url).await.expect("open sqlite"),
        _dir: Some(dir),
        schema: None,
    }];
    if let Some((scoped, url, schema)) = pg_schema_url(test).await {
        out.push(TestDb {
            name: "postgres",
            store: Store::open(&scoped).await.expect("open postgres"),
            _dir: None,
            schema: Some((url, schema)),
        });
    }
    out
}
