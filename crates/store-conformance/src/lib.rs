//! The store conformance suite: one set of cases per store seam
//! ([`cc_core::Store`], [`cc_core::Leases`], [`cc_core::IdentityStore`],
//! [`cc_core::AuditStore`], [`cc_core::IdempotencyStore`],
//! [`cc_core::webhook::WebhookStore`]),
//! written against the traits only, so every backend (SQLite, PostgreSQL)
//! runs the very same cases.
//!
//! A backend's integration tests call [`store_conformance!`] with an async
//! fn that returns `Some((guard, store))` for a fresh, empty store; the
//! guard lives for the test (a temporary directory, a throw-away schema…).
//! `None` skips the case (the backend's server is not configured; the
//! backend's `fresh` decides whether that is allowed, e.g. not in CI). The
//! macro expands to one `#[tokio::test]` per case, on a multi-threaded
//! runtime so the concurrency cases really race.
//!
//! What a backend must hold to pass: every invariant documented on the
//! traits, and errors classified as [`cc_core::StoreError::NotFound`] /
//! [`cc_core::StoreError::Conflict`] / [`cc_core::StoreError::Fenced`]
//! where the cases say so.
//!
//! This crate is a dev-dependency only; the shipped binary never links it.

pub mod audit;
pub mod idempotency;
pub mod identity;
pub mod leases;
pub mod sessions;
pub mod webhook;

/// Expands to one test per conformance case; `$fresh` is an async fn
/// returning `Option<(guard, store)>`.
#[macro_export]
macro_rules! store_conformance {
    ($fresh:path) => {
        $crate::store_conformance!(@cases $fresh; sessions;
            record_round_trips,
            unknown_session_is_none,
            duplicate_insert_is_refused,
            update_overwrites_fields_but_not_the_cursor,
            update_of_unknown_session_is_refused,
            list_is_newest_first_and_filters_live,
            append_then_read_with_since_and_limit,
            cursor_moves_with_the_batch,
            bad_batches_are_refused_and_write_nothing,
            append_to_unknown_session_is_refused,
            concurrent_appends_stay_contiguous,
            sealed_secrets_are_kept_replaced_and_deleted,
            a_state_change_writes_its_events_and_the_record_together,
            a_refused_state_change_writes_neither_events_nor_record,
            secrets_of_an_unknown_session_are_refused,
            retention_purges_only_old_ended_logs,
            erasure_removes_ended_sessions_and_refuses_live_ones,
        );
        $crate::store_conformance!(@cases $fresh; leases;
            a_created_session_is_held_by_its_creator,
            a_session_without_a_holder_is_unowned_and_claimable,
            heartbeat_renews_and_reports_held_sessions,
            an_expired_lease_moves_with_a_higher_fence,
            a_write_with_an_old_fence_is_refused_and_writes_nothing,
            release_makes_a_session_claimable_at_once,
            ended_sessions_are_never_unowned_or_claimable,
            a_sleeping_session_is_claimed_only_to_wake_it,
            concurrent_claims_have_one_winner,
            a_job_lock_is_exclusive_until_it_expires,
            held_by_replicas_leaves_out_expired_replicas,
            the_event_feed_wakes_on_appends,
        );
        $crate::store_conformance!(@cases $fresh; identity;
            tokens_are_found_by_hash_and_revoked,
            tokens_list_oldest_first_and_keep_their_fields,
            a_duplicate_token_is_a_conflict,
            a_users_tokens_are_deleted,
        );
        $crate::store_conformance!(@cases $fresh; idempotency;
            a_key_answers_with_its_first_session,
            a_released_claim_is_claimed_again_and_a_completed_one_stays,
            keys_expire_and_abandoned_claims_are_taken_over,
            concurrent_claims_of_a_key_have_one_winner,
            a_users_keys_are_deleted,
        );
        $crate::store_conformance!(@cases $fresh; webhook;
            endpoints_are_kept_and_deleted_with_their_deliveries,
            deliveries_go_out_in_order_per_session_and_endpoint,
            a_lock_holds_one_attempt_until_it_expires,
            concurrent_claims_never_share_a_delivery,
        );
        $crate::store_conformance!(@cases $fresh; audit;
            the_chain_verifies_and_filters_work,
            redacting_a_user_keeps_the_chain,
            concurrent_appends_never_fork_the_chain,
        );
    };
    (@cases $fresh:path; $module:ident; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some((_guard, store)) = $fresh().await else {
                    return;
                };
                $crate::$module::$case(store).await;
            }
        )*
    };
}
