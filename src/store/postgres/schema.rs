//! The PostgreSQL schema as versioned migrations: the tables (mirroring SQLite's, see
//! `sqlite::schema`, plus what a cluster needs: the chain's head row, leases, the instances),
//! the `processing_log` view, and `kp_append`, the function that extends the chain. Applied at
//! connect, in one transaction under an advisory lock, so however many instances start together
//! the database is migrated once and none of them sees half a schema.
//!
//! A migration is never edited once released: a change is a new entry at the end of
//! [`MIGRATIONS`].

use tokio_postgres::Client;

/// The lock every instance takes (for its transaction) before it looks at the schema.
const MIGRATION_LOCK: i64 = 0x6b70_5f6d_6967_7261; // "kp_migra"

/// The migrations, in order: entry `i` is version `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[V1];

/// Version 1: the tables, the view and the chain's function.
///
/// Times are `timestamptz`, except a registration's `updated_at`, which is kept as its text.
/// Records and outcomes are `text`, the canonical JSON exactly as hashed (never `jsonb`, which
/// would reorder it); an application's `data` likewise.
///
/// `kp_append` appends a batch of records (and writes a batch of outcomes) in one statement:
/// it locks the one head row, so the chain has one writer at a time across the cluster (seq
/// gapless, no two records linked to the same predecessor), computes each hash exactly as
/// `Head::next` does (SHA-256 of the previous hash's text, the sequence number as 8 big-endian
/// bytes, the record's text), inserts the rows and moves the head; it returns the first
/// record's sequence number. An outcome's hash is `outcome_hash` (SHA-256 of the record's hash
/// and the outcome's text), from the stored record; an outcome whose record is not there is
/// dropped, and the last of two for one record is kept, as in SQLite.
const V1: &str = r#"
CREATE TABLE audit_log (
    seq             bigint PRIMARY KEY,
    time            timestamptz NOT NULL,
    kind            text NOT NULL,
    trace_id        text NOT NULL,
    actor           text NOT NULL,
    actor_type      text NOT NULL,
    bsn             text,
    record          text NOT NULL,
    prev_hash       text NOT NULL,
    hash            text NOT NULL,
    data_subject_id text,
    instance        text NOT NULL
);
CREATE INDEX audit_log_bsn ON audit_log (bsn, seq);
CREATE INDEX audit_log_time ON audit_log (time);

CREATE TABLE audit_outcome (
    seq     bigint PRIMARY KEY REFERENCES audit_log (seq),
    outcome text NOT NULL,
    hash    text NOT NULL
);

CREATE TABLE audit_head (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, repeat('0', 64));

CREATE TABLE applications (
    id              text PRIMARY KEY,
    service         text NOT NULL,
    organisation    text NOT NULL,
    bsn             text NOT NULL,
    actor           text NOT NULL,
    idempotency_key text NOT NULL,
    data            text NOT NULL,
    status          text NOT NULL,
    reference       text,
    reason          text,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    submit_seq      bigint,
    lease_until     timestamptz,
    leased_by       text,
    UNIQUE (actor, idempotency_key)
);
CREATE INDEX applications_due ON applications (next_attempt_at) WHERE status = 'received';
CREATE INDEX applications_subject ON applications (bsn, created_at);
CREATE INDEX applications_subject_open ON applications (bsn, created_at)
    WHERE status = 'received';

CREATE TABLE registrations (
    id           text PRIMARY KEY,
    organisation text NOT NULL,
    descriptor   text NOT NULL,
    sha256       text NOT NULL,
    updated_at   text NOT NULL,
    updated_by   text NOT NULL
);

CREATE TABLE instances (
    id             text PRIMARY KEY,
    started_at     timestamptz NOT NULL,
    seen_at        timestamptz NOT NULL,
    config_version text NOT NULL
);

CREATE VIEW processing_log AS
SELECT a.seq AS seq, a.trace_id AS trace_id,
    r.j ->> 'span_id' AS span_id,
    r.j ->> 'foreign_span_id' AS parent_span_id,
    'ketenportaal.' || a.kind AS name,
    r.j ->> 'started_at' AS start_time,
    COALESCE(o.j ->> 'time', r.j ->> 'time') AS end_time,
    CASE WHEN COALESCE(o.j ->> 'outcome', r.j ->> 'outcome') LIKE 'failed%'
           OR COALESCE(o.j ->> 'outcome', r.j ->> 'outcome') LIKE 'refused%' THEN 'ERROR'
         ELSE 'OK' END AS status_code,
    CASE WHEN r.j ->> 'foreign_span_id' IS NULL THEN NULL
         ELSE '{"trace_id":' || to_json(a.trace_id)::text
              || ',"span_id":' || to_json(r.j ->> 'foreign_span_id')::text || '}'
    END AS foreign_operation,
    r.j ->> 'processing_activity' AS processing_activity_id,
    a.data_subject_id AS data_subject_id,
    'BSN' AS data_subject_id_type
FROM audit_log a
CROSS JOIN LATERAL (SELECT a.record::json AS j) r
LEFT JOIN audit_outcome ao ON ao.seq = a.seq
LEFT JOIN LATERAL (SELECT ao.outcome::json AS j) o ON true
WHERE a.data_subject_id IS NOT NULL;

CREATE FUNCTION kp_append(
    writer text, records text[], times text[], kinds text[], trace_ids text[], actors text[],
    actor_types text[], bsns text[], pseudonyms text[], outcome_seqs bigint[], outcomes text[]
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    head_seq  bigint;
    head_hash text;
    first     bigint;
    n         integer := cardinality(records);
    seqs      bigint[];
    prevs     text[];
    hashes    text[];
BEGIN
    IF n > 0 THEN
        SELECT h.seq, h.hash INTO head_seq, head_hash FROM audit_head h WHERE h.id = 1 FOR UPDATE;
        first := head_seq + 1;
        FOR i IN 1 .. n LOOP
            head_seq := head_seq + 1;
            seqs[i] := head_seq;
            prevs[i] := head_hash;
            head_hash := encode(sha256(convert_to(head_hash, 'UTF8') || int8send(head_seq)
                                       || convert_to(records[i], 'UTF8')), 'hex');
            hashes[i] := head_hash;
        END LOOP;
        INSERT INTO audit_log (seq, time, kind, trace_id, actor, actor_type, bsn, record,
                               prev_hash, hash, data_subject_id, instance)
        SELECT r.seq, r.time::timestamptz, r.kind, r.trace_id, r.actor, r.actor_type, r.bsn,
               r.record, r.prev, r.hash, r.pseudonym, writer
        FROM unnest(seqs, times, kinds, trace_ids, actors, actor_types, bsns, records, prevs,
                    hashes, pseudonyms)
             AS r (seq, time, kind, trace_id, actor, actor_type, bsn, record, prev, hash,
                   pseudonym);
        UPDATE audit_head SET seq = head_seq, hash = head_hash WHERE id = 1;
    END IF;
    IF cardinality(outcome_seqs) > 0 THEN
        INSERT INTO audit_outcome (seq, outcome, hash)
        SELECT DISTINCT ON (o.seq) o.seq, o.outcome,
               encode(sha256(convert_to(a.hash, 'UTF8') || convert_to(o.outcome, 'UTF8')), 'hex')
        FROM unnest(outcome_seqs, outcomes) WITH ORDINALITY AS o (seq, outcome, nth)
        JOIN audit_log a ON a.seq = o.seq
        ORDER BY o.seq, o.nth DESC
        ON CONFLICT (seq) DO UPDATE SET outcome = EXCLUDED.outcome, hash = EXCLUDED.hash;
    END IF;
    RETURN first;
END
$$;
"#;

/// Brings the database to the current schema: in one transaction, under [`MIGRATION_LOCK`],
/// the versions not yet in `schema_migrations` are applied in order (PostgreSQL's DDL is
/// transactional: all of them or none). Returns how many were applied (0 for a current
/// database, whoever migrated it).
pub(super) async fn migrate(c: &mut Client) -> Result<usize, tokio_postgres::Error> {
    let tx = c.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL
         )",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    let mut applied = 0;
    for (version, sql) in (1i32..).zip(MIGRATIONS) {
        if version <= current {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())",
            &[&version],
        )
        .await?;
        applied += 1;
    }
    tx.commit().await?;
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if current > known {
        tracing::warn!(
            schema = current,
            known,
            "The database was migrated by a newer version of the gateway; carrying on with it."
        );
    }
    Ok(applied)
}
