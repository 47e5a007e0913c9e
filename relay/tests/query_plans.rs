//! Query plans of the hot reads on SQLite, whose planner has no table statistics (the relay
//! never runs ANALYZE): a plan that reads every live message instead of one patient's costs
//! milliseconds per request once a relay holds thousands (issue 11; `scripts/bench` measured
//! 17 ms of CPU per `GET /v1/viewer/messages` with 19,000 live messages). PostgreSQL plans from
//! statistics and is measured by the benchmark instead.

use relay::store::Backend;
use relay::store::messages::live_for_recipient_sql;
use relay::testkit::TestRelay;
use sqlx::Row;

/// SQLite's plan for `sql`, one line per step.
async fn plan(relay: &TestRelay, sql: &str) -> Vec<String> {
    let mut conn = relay.state().store().conn().await.unwrap();
    sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
        .bind("a patient")
        .bind("an organisation")
        .bind(0_i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String, _>("detail").unwrap())
        .collect()
}

#[tokio::test]
async fn the_viewers_list_reads_one_patients_messages() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let steps = plan(&relay, &live_for_recipient_sql()).await;
    let messages = steps
        .iter()
        .find(|step| step.contains(" m "))
        .unwrap_or_else(|| panic!("no step reads messages: {steps:?}"));
    assert!(
        messages.contains("USING INDEX messages_recipient")
            && messages
                .contains("recipient_id=? AND organisation_id=? AND status=? AND expires_at>?"),
        "the list must search the patient index on the whole condition, not: {steps:?}"
    );
    relay.finish().await;
}
