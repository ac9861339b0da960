//! The [`IdentityStore`] cases: API tokens found by hash, revoked, counted
//! and erased.

use cc_core::identity::{hash_token, IdentityStore, NewToken, Role};
use cc_core::StoreError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub async fn tokens_are_found_by_hash_and_revoked<S: IdentityStore>(store: S) {
    let now = SystemTime::now();
    let t = NewToken::generate("alice", Role::User, Some("laptop".into()), now);
    store.insert_token(&t.record).await.expect("insert");
    assert_eq!(store.active_tokens().await.expect("count"), 1);
    let found = store
        .token_by_hash(&hash_token(&t.token))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(found.user, "alice");
    assert_eq!(found.role, Role::User);
    assert_eq!(found.label.as_deref(), Some("laptop"));
    assert_eq!(found.revoked_at, None);
    assert!(store
        .token_by_hash(&hash_token("cct_other"))
        .await
        .expect("find other")
        .is_none());
    assert!(store.revoke_token(&t.record.id, now).await.expect("revoke"));
    assert!(!store
        .revoke_token(&t.record.id, now)
        .await
        .expect("revoke again"));
    assert!(!store.revoke_token("nosuchtoken", now).await.expect("none"));
    assert_eq!(store.active_tokens().await.expect("count"), 0);
    let found = store
        .token_by_hash(&hash_token(&t.token))
        .await
        .expect("find")
        .expect("found");
    assert!(found.revoked_at.is_some());
    assert_eq!(store.list_tokens().await.expect("list").len(), 1);
}

pub async fn tokens_list_oldest_first_and_keep_their_fields<S: IdentityStore>(store: S) {
    let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
    let newer = NewToken::generate("bob", Role::Admin, None, at(2_000));
    let older = NewToken::generate("alice", Role::User, Some("ci".into()), at(1_000));
    store.insert_token(&newer.record).await.expect("insert");
    store.insert_token(&older.record).await.expect("insert");
    let list = store.list_tokens().await.expect("list");
    assert_eq!(list, vec![older.record.clone(), newer.record.clone()]);
}

pub async fn a_duplicate_token_is_a_conflict<S: IdentityStore>(store: S) {
    let t = NewToken::generate("alice", Role::User, None, SystemTime::now());
    store.insert_token(&t.record).await.expect("insert");
    let mut same_hash = t.record.clone();
    same_hash.id = "aaaaaaaaaaaa".into();
    assert!(matches!(
        store.insert_token(&same_hash).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.list_tokens().await.expect("list").len(), 1);
}

pub async fn a_users_tokens_are_deleted<S: IdentityStore>(store: S) {
    let now = SystemTime::now();
    for user in ["alice", "alice", "bob"] {
        let t = NewToken::generate(user, Role::User, None, now);
        store.insert_token(&t.record).await.expect("insert");
    }
    assert_eq!(store.delete_user_tokens("alice").await.expect("delete"), 2);
    let left = store.list_tokens().await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].user, "bob");
    assert_eq!(store.delete_user_tokens("alice").await.expect("again"), 0);
}
