//! Cluster mode end to end (issue 16), small: three instances behind HAProxy on one
//! PostgreSQL and one Redis, under a mixed load; one instance killed with `kill -9` and
//! started again, then PostgreSQL restarted. The scenario is tests/support/cluster.rs; the
//! full-size run is `bash benches/cluster.sh`. Skipped (it says so) when PostgreSQL, Redis or
//! HAProxy is not installed, unless `KETENPORTAAL_SERVICE_TESTS=required` (as in `.ci/run`).

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/redis.rs"]
mod redis;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_lose_nothing_when_one_is_killed_and_postgresql_restarts() {
    let (Some(pg), Some(redis)) = (postgres::postgres(), redis::redis()) else {
        return;
    };
    if !cluster::haproxy_available() {
        return;
    }
    let f = cluster::run(cluster::Size::small(), pg, redis).await;
    println!("{f}");
    assert!(f.reads_ok > 100 && f.applications_accepted > 5, "{f}");
    assert_eq!(f.client_failures, 0, "{f}");
    assert_eq!(f.reads_without_audit, 0, "{f}");
    assert_eq!(f.accepted_lost, 0, "{f}");
    assert_eq!(f.delivered_twice, 0, "{f}");
    assert_eq!(f.keys_with_two_ids, 0, "{f}");
    assert!(f.chain_intact, "{f}");
    assert_eq!(f.changes_not_written, 0, "{f}");
    assert!(f.audit_records as u64 >= f.reads_ok, "{f}");
    assert_eq!(f.versions_after.len(), 1, "{f}");
    for d in f
        .registration_propagation
        .iter()
        .chain(&f.invalidation_propagation)
    {
        assert!(*d < Duration::from_secs(1), "{f}");
    }
    assert_eq!(f.redis_stopped_failures, 0, "{f}");
}
