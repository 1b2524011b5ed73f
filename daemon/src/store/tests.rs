use super::testing::backends;
use super::*;

fn token(id: &str, tenant: &str, created: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        tenant: tenant.into(),
        roles: vec!["bot".into(), "qa".into()],
        token_hash: format!("hash-{id}"),
        description: "desk".into(),
        created_at: created,
        last_used_at: None,
        revoked_at: None,
    }
}

#[tokio::test]
async fn tokens_round_trip_revoke_and_touch() {
    for db in backends("tokens_round_trip_revoke_and_touch").await {
        let s = &db.store;
        s.insert_token(&token("a", "bank1", 1)).await.unwrap();
        s.insert_token(&token("b", "bank2", 2)).await.unwrap();
        assert_eq!(s.list_tokens(None).await.unwrap().len(), 2, "{}", db.name);
        let mine = s.list_tokens(Some("bank1")).await.unwrap();
        assert_eq!(mine, vec![token("a", "bank1", 1)], "{}", db.name);
        // The hash is unique: a duplicate insert fails and changes nothing.
        let mut dup = token("c", "bank1", 3);
        dup.token_hash = "hash-a".into();
        assert!(s.insert_token(&dup).await.is_err(), "{}", db.name);
        s.revoke_token("a").await.unwrap();
        let first = s.get_token("a").await.unwrap().revoked_at;
        assert!(first.is_some());
        s.revoke_token("a").await.unwrap();
        assert_eq!(s.get_token("a").await.unwrap().revoked_at, first);
        assert!(matches!(
            s.revoke_token("zzz").await,
            Err(StoreError::NotFound(_))
        ));
        s.touch_tokens(&[("b".into(), 99)]).await.unwrap();
        assert_eq!(s.get_token("b").await.unwrap().last_used_at, Some(99));
        db.drop_schema().await;
    }
}

#[tokio::test]
async fn audit_is_filtered_by_tenant_newest_first_and_purgeable() {
    for db in backends("audit_is_filtered_by_tenant_newest_first_and_purgeable").await {
        let s = &db.store;
        s.audit("local:0", "bank1", "token.create", "a", "roles=bot")
            .await
            .unwrap();
        s.audit("token:a", "bank2", "token.revoke", "b", "")
            .await
            .unwrap();
        s.audit("token:a", "bank1", "model.reload", "", "")
            .await
            .unwrap();
        let all = s.list_audit(&AuditFilter::default()).await.unwrap();
        assert_eq!(all.len(), 3, "{}", db.name);
        let b1 = s
            .list_audit(&AuditFilter {
                tenant: Some("bank1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(b1.len(), 2);
        assert_eq!(b1[0].action, "model.reload", "newest first on {}", db.name);
        assert!(b1.iter().all(|e| e.tenant == "bank1"));
        assert_eq!(s.purge_audit_before(now_ms() + 1000).await.unwrap(), 3);
        assert!(
            s.list_audit(&AuditFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
        db.drop_schema().await;
    }
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let s = Store::open(&url).await.unwrap();
    s.insert_token(&token("a", "t", 1)).await.unwrap();
    s.close().await;
    let s = Store::open(&url).await.unwrap();
    assert_eq!(s.list_tokens(None).await.unwrap().len(), 1);
    assert!(matches!(
        Store::open("mysql://x").await,
        Err(StoreError::UnsupportedUrl(_))
    ));
}
