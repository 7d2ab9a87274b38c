//! The hash-chained audit log, whatever keeps it: [`AuditLog`], the operations a backend
//! implements, and the chain's rules, which no backend restates. Each record's hash is
//! `SHA-256(prev_hash || seq || canonical JSON)`; an outcome's hash binds it to the hash of the
//! record it completes; the data subject of each record about one is pseudonymised with
//! HMAC-SHA-256 under the configured key (for the processing log, the Logboek Dataverwerkingen
//! shape); [`Check`] walks a backend's rows in sequence order and says what `verify` found.
//!
//! Nothing here does I/O: a backend reads and writes the rows, this module decides what they
//! must hold.

use std::ops::ControlFlow;

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::StoreError;
use super::record::{AccessRecord, Completion};
use crate::bsn::Bsn;

/// The hash the first record links to.
const GENESIS: HexHash = HexHash([b'0'; 64]);

/// A SHA-256 hash as the chain writes it, 64 lower-case hex digits, kept inline: the journal
/// chains every record and hands its two hashes to the indexer, and a `String` each was two
/// allocations per record, freed on another thread.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct HexHash([u8; 64]);

impl HexHash {
    fn of(digest: &[u8]) -> HexHash {
        let mut hex = [b'0'; 64];
        // A SHA-256 digest is 32 bytes: exactly the room; as `crate::lower_hex` encodes.
        let _ = hex::encode_to_slice(digest, &mut hex);
        HexHash(hex)
    }

    /// The hash a row holds. One that is not 64 lower-case hex digits (the file was altered)
    /// is taken as the hash of that text, so the chain goes on from it and never matches it;
    /// `verify` reports the altered row.
    pub(super) fn from_stored(text: &str) -> HexHash {
        let hex = text.as_bytes();
        match <[u8; 64]>::try_from(hex) {
            Ok(h) if h.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => HexHash(h),
            _ => HexHash::of(&Sha256::digest(hex)),
        }
    }

    pub(super) fn as_str(&self) -> &str {
        // Only hex digits are ever put in.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::ops::Deref for HexHash {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for HexHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The audit log: access records appended to the chain, the outcomes completing them, and the
/// reads the API makes of it. Every append is durable before it returns (fail closed).
pub trait AuditLog: Send + Sync {
    /// Appends a record to the chain; its sequence number, once it is durable.
    fn append(&self, record: AccessRecord) -> BoxFuture<'_, Result<i64, StoreError>>;

    /// Completes record `seq` (appended while its access was under way) with its outcome, bound
    /// to the record's hash. Nobody waits for it: an outcome that cannot be written is logged,
    /// and the record stays `requested`.
    fn append_outcome(&self, seq: i64, outcome: &Completion);

    /// Records about one data subject, newest first, each as it reads with its outcome.
    fn by_subject(
        &self,
        bsn: Bsn,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<(i64, AccessRecord)>, StoreError>>;

    /// Is a record with this trace id present? (Used by durability checks.)
    fn has_trace(&self, trace_id: String) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Number of rows in the audit log and the processing log.
    fn counts(&self) -> BoxFuture<'_, Result<(i64, i64), StoreError>>;
}

thread_local! {
    /// Where a record's JSON is written before it is copied out at its exact length.
    static SERIALISED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A record's canonical JSON, in a string of exactly its length. Written into a buffer the
/// thread keeps, then copied out once: serialising into a fresh string grew it 128 → 256 →
/// 512 → 1024 bytes (three copies), and left up to twice the record's size held while the
/// record waits for the journal and the index.
fn canonical_json(record: &AccessRecord) -> String {
    SERIALISED.with_borrow_mut(|buf| {
        buf.clear();
        record.write_json(buf);
        String::from_utf8(buf.clone()).unwrap_or_default()
    })
}

/// An access record on its way to be chained, serialised on the caller's thread: the writer
/// (the store's bottleneck) only hashes, pseudonymises and inserts.
pub(super) struct Entry {
    /// The canonical JSON of the record (what the chain hashes).
    pub(super) json: String,
    /// `record.time` as RFC 3339 (the column reports filter on).
    pub(super) time: String,
    pub(super) kind: String,
    pub(super) trace_id: String,
    pub(super) actor: String,
    pub(super) actor_type: String,
    pub(super) bsn: Option<Bsn>,
}

impl Entry {
    pub(super) fn new(record: AccessRecord) -> Entry {
        Entry {
            json: canonical_json(&record),
            time: crate::timefmt::rfc3339_offset(&record.time),
            kind: record.kind,
            trace_id: record.trace_id,
            actor: record.actor,
            actor_type: record.actor_type,
            bsn: record.bsn,
        }
    }

    /// The entry of a record read back as stored (its canonical JSON, which the chain hashes,
    /// kept as it is); `None` when it is not a record.
    pub(super) fn from_json(json: String) -> Option<Entry> {
        let r = serde_json::from_str::<AccessRecord>(&json).ok()?;
        Some(Entry {
            time: crate::timefmt::rfc3339_offset(&r.time),
            kind: r.kind,
            trace_id: r.trace_id,
            actor: r.actor,
            actor_type: r.actor_type,
            bsn: r.bsn,
            json,
        })
    }
}

/// A stored record as it reads with its outcome (the JSON of a [`Completion`], when one was
/// written); `None` for a row that is not a record.
pub(super) fn completed(record_json: &str, outcome_json: Option<&str>) -> Option<AccessRecord> {
    let mut rec = serde_json::from_str::<AccessRecord>(record_json).ok()?;
    if let Some(done) = outcome_json.and_then(|o| serde_json::from_str::<Completion>(o).ok()) {
        done.apply(&mut rec);
    }
    Some(rec)
}

/// The head of the hash chain: the last record's sequence number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) seq: i64,
    pub(super) hash: HexHash,
}

impl Head {
    /// The head of an empty chain.
    pub(super) fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS,
        }
    }

    /// The head once the record with this canonical JSON follows this one.
    pub(super) fn next(&self, record_json: &str) -> Head {
        let seq = self.seq + 1;
        Head {
            seq,
            hash: chain_hash(&self.hash, seq, record_json),
        }
    }
}

pub(super) fn chain_hash(prev: &str, seq: i64, record_json: &str) -> HexHash {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(record_json.as_bytes());
    HexHash::of(&h.finalize())
}

/// An outcome's hash: bound to the record it completes, so changing either shows.
pub(super) fn outcome_hash(record_hash: &str, outcome_json: &str) -> String {
    let mut h = Sha256::new();
    h.update(record_hash.as_bytes());
    h.update(outcome_json.as_bytes());
    crate::lower_hex(&h.finalize())
}

/// The HMAC keyed once; each pseudonym clones the keyed state.
pub(super) fn pseudonym_mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| {
        <Hmac<Sha256> as Mac>::new_from_slice(b"ketenportaal").unwrap_or_else(|_| unreachable!())
    })
}

/// The data subject as the processing log names them.
pub(super) fn pseudonym(keyed: &Hmac<Sha256>, bsn: &Bsn) -> String {
    let mut m = keyed.clone();
    m.update(bsn.as_str().as_bytes());
    crate::lower_hex(&m.finalize().into_bytes())
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Intact {
        records: i64,
        head: String,
    },
    /// The row's content does not match its hash: it was changed.
    Modified {
        seq: i64,
    },
    /// A sequence number is missing: a row was removed.
    Missing {
        after: i64,
        next: i64,
    },
    /// The row does not link to its predecessor: rows were reordered or replaced.
    Broken {
        seq: i64,
    },
    /// The journal of an embedded store is damaged where a crash cannot have torn it.
    JournalDamaged {
        segment: String,
        offset: u64,
        reason: String,
    },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Intact { records, head } => {
                write!(f, "intact: {records} records, head {head}")
            }
            Verdict::Modified { seq } => write!(
                f,
                "record {seq} was modified (its hash does not match its content)"
            ),
            Verdict::Missing { after, next } => {
                write!(f, "records between {after} and {next} were removed")
            }
            Verdict::Broken { seq } => write!(
                f,
                "record {seq} does not follow its predecessor (reordered or replaced)"
            ),
            Verdict::JournalDamaged {
                segment,
                offset,
                reason,
            } => write!(
                f,
                "the audit journal is damaged: segment {segment}, byte {offset}: {reason}"
            ),
        }
    }
}

/// The walk `verify` makes: a backend hands it every record row in sequence order, then every
/// outcome row; the first row that breaks the chain is the verdict.
pub(super) struct Check {
    /// The last record that checked out (genesis before the first).
    head: Head,
    records: i64,
}

impl Check {
    pub(super) fn new() -> Check {
        Check {
            head: Head::genesis(),
            records: 0,
        }
    }

    /// The sequence number of the last record that checked out.
    pub(super) fn last(&self) -> i64 {
        self.head.seq
    }

    /// The next record row: its sequence number, canonical JSON, and the two hashes it holds.
    pub(super) fn record(
        &mut self,
        seq: i64,
        record_json: &str,
        prev: &str,
        hash: &str,
    ) -> ControlFlow<Verdict> {
        let computed = chain_hash(prev, seq, record_json);
        if computed.as_str() != hash {
            return ControlFlow::Break(Verdict::Modified { seq });
        }
        if seq != self.head.seq + 1 {
            return ControlFlow::Break(Verdict::Missing {
                after: self.head.seq,
                next: seq,
            });
        }
        if prev != self.head.hash.as_str() {
            return ControlFlow::Break(Verdict::Broken { seq });
        }
        // The row's hash is the one just computed: no need to read its text again.
        self.head = Head {
            seq,
            hash: computed,
        };
        self.records += 1;
        ControlFlow::Continue(())
    }

    /// An outcome row, with the hash of the record it completes (`None`: there is no such
    /// record).
    pub(super) fn outcome(
        &self,
        seq: i64,
        outcome_json: &str,
        hash: &str,
        record_hash: Option<&str>,
    ) -> ControlFlow<Verdict> {
        if record_hash.is_none_or(|p| outcome_hash(p, outcome_json) != hash) {
            return ControlFlow::Break(Verdict::Modified { seq });
        }
        ControlFlow::Continue(())
    }

    /// After the last record row: the head the store keeps beside the chain (a backend that
    /// keeps one). The chain must end there: rows missing at the end were removed, rows past
    /// it were not appended as the chain is, and a last row that is not the head's was
    /// replaced.
    pub(super) fn ends_at(&self, seq: i64, hash: &str) -> ControlFlow<Verdict> {
        if self.head.seq < seq {
            return ControlFlow::Break(Verdict::Missing {
                after: self.head.seq,
                next: seq + 1,
            });
        }
        if self.head.seq > seq {
            return ControlFlow::Break(Verdict::Broken { seq: seq + 1 });
        }
        if self.head.hash.as_str() != hash {
            return ControlFlow::Break(Verdict::Modified { seq });
        }
        ControlFlow::Continue(())
    }

    /// The verdict once every row has checked out.
    pub(super) fn intact(self) -> Verdict {
        Verdict::Intact {
            records: self.records,
            head: self.head.hash.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_its_digest_in_lower_case_hex_and_a_stored_one_that_is_not_never_matches() {
        let digest = Sha256::digest(b"record");
        let hash = HexHash::of(&digest);
        assert_eq!(hash.as_str(), crate::lower_hex(&digest));
        assert_eq!(HexHash::from_stored(hash.as_str()), hash);
        assert_eq!(&*Head::genesis().hash, "0".repeat(64));
        // Altered text (upper case, short, not hex) is taken as the hash of itself.
        for altered in [hash.as_str().to_uppercase(), "ab".into(), "z".repeat(64)] {
            let taken = HexHash::from_stored(&altered);
            assert_ne!(taken.as_str(), altered);
            assert_eq!(taken, HexHash::of(&Sha256::digest(altered.as_bytes())));
            assert!(
                taken
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
    }
}
