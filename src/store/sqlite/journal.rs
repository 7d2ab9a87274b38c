//! The audit journal: the embedded backend's durability point. Records and outcomes are
//! appended to it in CRC-framed batches, one `write` and one `fdatasync` per batch; the SQLite
//! file is the *index*, filled from it in large transactions off the request path (see
//! `writer`). This file knows the format on disk, how a folder of segments is read back, and
//! what recovery does with it; no threads.
//!
//! # Format
//! The journal is a folder beside the SQLite file, `<file>.journal/`, of segments named by a
//! counter (`000000000001.kpj`, ...); the writer starts a new one past [`SEGMENT_BYTES`], and
//! the indexer deletes a segment once all of it is in the index and the index is durable. A
//! segment is a sequence of frames:
//!
//! ```text
//! "KPJ1" | len: u32 LE | crc32c(len bytes ++ payload): u32 LE | payload (len bytes)
//! payload = kind: u8 | seq: i64 LE | body
//!   kind 1, a record:  body = prev_hash (64 hex) | hash (64 hex) | canonical JSON
//!   kind 2, an outcome: body = the outcome's JSON, completing record `seq`
//! ```
//!
//! # Torn tail or corruption
//! A crash can tear only the batch being written when it came, which nobody was told of: bad
//! bytes at the end of the last segment, with no valid frame after them. Recovery keeps them in
//! a `.torn` file beside the segment and goes on. Bad bytes anywhere else (a valid frame after
//! them, or in a segment already closed), or a record that does not follow the chain, are
//! corruption: the store refuses to open, names the segment and the byte, and drops nothing.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::Hmac;
use rusqlite::{Connection, TransactionBehavior};
use sha2::Sha256;

use super::audit;
use crate::store::audit::{Entry, Head, chain_hash};

const MAGIC: [u8; 4] = *b"KPJ1";
const HEADER: usize = 12;
/// The largest payload a reader accepts (a record is a few KiB; anything larger is damage).
const MAX_PAYLOAD: usize = 16 << 20;
/// The size past which the writer starts a new segment.
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;
const RECORD: u8 = 1;
const OUTCOME: u8 = 2;
const HASH_HEX: usize = 64;

/// The journal folder of the SQLite file at `db`.
pub(super) fn folder(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    db.with_file_name(name)
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:012}.kpj"))
}

/// What went wrong with the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("audit journal {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Damage that is not a torn last write: nothing is dropped, the store does not open.
    #[error(
        "audit journal segment {} is damaged at byte {offset}: {reason}; nothing was dropped (see docs/operators.md, \"The audit journal\")",
        segment.display()
    )]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> JournalError + '_ {
    |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ----------------------------------------------------------------------------------------------
// Frames
// ----------------------------------------------------------------------------------------------

/// Appends a record frame to `buf`.
pub(super) fn put_record(buf: &mut Vec<u8>, seq: i64, prev: &str, hash: &str, json: &str) {
    put(
        buf,
        RECORD,
        seq,
        &[prev.as_bytes(), hash.as_bytes(), json.as_bytes()],
    );
}

/// Appends an outcome frame (completing record `of`) to `buf`.
pub(super) fn put_outcome(buf: &mut Vec<u8>, of: i64, json: &str) {
    put(buf, OUTCOME, of, &[json.as_bytes()]);
}

fn put(buf: &mut Vec<u8>, kind: u8, seq: i64, parts: &[&[u8]]) {
    let start = buf.len();
    let len = 9 + parts.iter().map(|p| p.len()).sum::<usize>();
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    buf.extend_from_slice(&seq.to_le_bytes());
    for p in parts {
        buf.extend_from_slice(p);
    }
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&buf[start + 4..start + 8]),
        &buf[start + 12..],
    );
    buf[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// A frame as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frame {
    Record {
        seq: i64,
        prev: String,
        hash: String,
        json: String,
    },
    Outcome {
        of: i64,
        json: String,
    },
}

/// The frame at the start of `rest` and its length on disk, or why there is none.
fn frame_at(rest: &[u8]) -> Result<(Frame, usize), &'static str> {
    if rest.len() < HEADER {
        return Err("a frame header cut short");
    }
    if rest[..4] != MAGIC {
        return Err("no frame starts here");
    }
    let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
    if !(9..=MAX_PAYLOAD).contains(&len) {
        return Err("a frame length out of bounds");
    }
    let Some(payload) = rest.get(HEADER..HEADER + len) else {
        return Err("a frame cut short");
    };
    let crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
    if crc32c::crc32c_append(crc32c::crc32c(&rest[4..8]), payload) != crc {
        return Err("a frame whose checksum does not match");
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&payload[1..9]);
    let seq = i64::from_le_bytes(seq);
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "a frame that is not UTF-8");
    let body = &payload[9..];
    let frame = match payload[0] {
        RECORD if body.len() > 2 * HASH_HEX => Frame::Record {
            seq,
            prev: text(&body[..HASH_HEX])?,
            hash: text(&body[HASH_HEX..2 * HASH_HEX])?,
            json: text(&body[2 * HASH_HEX..])?,
        },
        OUTCOME => Frame::Outcome {
            of: seq,
            json: text(body)?,
        },
        _ => return Err("a frame of an unknown kind"),
    };
    Ok((frame, HEADER + len))
}

/// The offset of the first valid frame in `data` at or after `from`, if any.
fn next_frame(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(HEADER - 1))
        .find(|&at| data[at..].starts_with(&MAGIC) && frame_at(&data[at..]).is_ok())
}

// ----------------------------------------------------------------------------------------------
// Segments, read back
// ----------------------------------------------------------------------------------------------

/// A segment opened for reading. Opened before anything else is read (see [`list`]).
pub(super) struct Segment {
    pub(super) number: u64,
    pub(super) path: PathBuf,
    file: File,
}

/// The segments in `dir`, oldest first, each opened: a segment the indexer deletes after this
/// stays readable, so a reader that lists the journal *before* it reads the index misses
/// nothing (whatever was deleted in between is in the index it reads next).
pub(super) fn list(dir: &Path) -> Result<Vec<Segment>, JournalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir)(e)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error(dir))?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".kpj"))
            .and_then(|n| n.parse::<u64>().ok());
        let Some(number) = number else { continue };
        match File::open(&path) {
            Ok(file) => segments.push(Segment { number, path, file }),
            // Deleted since the folder was read: all of it is in the index.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path)(e)),
        }
    }
    segments.sort_by_key(|s| s.number);
    Ok(segments)
}

/// Bad bytes at the end of the last segment: the batch being written when the writer stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Torn {
    pub(super) segment: PathBuf,
    pub(super) offset: u64,
    pub(super) bytes: Vec<u8>,
}

/// Every frame of `segments` in order, and the torn tail, if any. Any other damage is an error.
pub(super) fn scan(segments: &[Segment]) -> Result<(Vec<Frame>, Option<Torn>), JournalError> {
    let mut frames = Vec::new();
    let mut torn = None;
    for (i, s) in segments.iter().enumerate() {
        let mut data = Vec::new();
        (&s.file)
            .read_to_end(&mut data)
            .map_err(io_error(&s.path))?;
        let mut at = 0;
        while at < data.len() {
            match frame_at(&data[at..]) {
                Ok((frame, len)) => {
                    frames.push(frame);
                    at += len;
                }
                Err(reason) => {
                    let corrupt = |reason: String| JournalError::Corrupt {
                        segment: s.path.clone(),
                        offset: at as u64,
                        reason,
                    };
                    if let Some(next) = next_frame(&data, at + 1) {
                        return Err(corrupt(format!(
                            "{reason}, and a valid frame follows at byte {next}"
                        )));
                    }
                    if i + 1 < segments.len() {
                        return Err(corrupt(format!(
                            "{reason}, in a segment a later one follows"
                        )));
                    }
                    torn = Some(Torn {
                        segment: s.path.clone(),
                        offset: at as u64,
                        bytes: data[at..].to_vec(),
                    });
                    break;
                }
            }
        }
    }
    Ok((frames, torn))
}

/// Checks the records of `frames` past `head` (the index's head): they must follow it one by
/// one, each linked to the one before and matching its hash. Calls `each` with every frame past
/// the head, in order (outcomes included); the head they end at.
pub(super) fn past<'f>(
    frames: &'f [Frame],
    head: &Head,
    segment: &Path,
    mut each: impl FnMut(&'f Frame) -> Result<(), JournalError>,
) -> Result<Head, JournalError> {
    let mut chain = head.clone();
    let corrupt = |reason: String| JournalError::Corrupt {
        segment: segment.to_path_buf(),
        offset: 0,
        reason,
    };
    for f in frames {
        match f {
            Frame::Record { seq, .. } if *seq <= head.seq => {}
            Frame::Record {
                seq,
                prev,
                hash,
                json,
            } => {
                if *seq != chain.seq + 1 {
                    return Err(corrupt(format!(
                        "record {seq} follows record {}: records are missing",
                        chain.seq
                    )));
                }
                if *prev != chain.hash || chain_hash(prev, *seq, json) != *hash {
                    return Err(corrupt(format!(
                        "record {seq} does not follow the chain (changed, or not written by this store)"
                    )));
                }
                chain = Head {
                    seq: *seq,
                    hash: hash.clone(),
                };
                each(f)?;
            }
            Frame::Outcome { of, .. } if *of <= head.seq => {}
            Frame::Outcome { .. } => each(f)?,
        }
    }
    Ok(chain)
}

// ----------------------------------------------------------------------------------------------
// Recovery
// ----------------------------------------------------------------------------------------------

/// What opening the journal found.
pub(super) struct Recovered {
    /// The head of the chain, index and journal together (all now in the index).
    pub(super) head: Head,
    /// The number of the segment to write next.
    pub(super) next_segment: u64,
}

/// Replays the journal of `db` into the index (`c`, the writer's connection) and removes the
/// segments: everything in them is then in the index, committed with `synchronous=FULL`. A
/// torn tail is kept in a `.torn` file; corruption is an error, and nothing is removed.
pub(super) fn recover(
    db: &Path,
    c: &mut Connection,
    key: &Hmac<Sha256>,
) -> Result<Recovered, super::StoreError> {
    let dir = folder(db);
    let sqlite = super::sqlite_error(db);
    std::fs::create_dir_all(&dir).map_err(|e| super::StoreError::Folder(dir.clone(), e))?;
    let segments = list(&dir)?;
    let (frames, torn) = scan(&segments)?;
    let head = audit::chain_head(c).map_err(&sqlite)?;
    let last = segments.last().map_or(dir.clone(), |s| s.path.clone());
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&sqlite)?;
    let mut replayed = 0;
    let head = past(&frames, &head, &last, |f| {
        let written = match f {
            Frame::Record {
                seq,
                prev,
                hash,
                json,
            } => {
                let Some(entry) = Entry::from_json(json.clone()) else {
                    return Err(JournalError::Corrupt {
                        segment: last.clone(),
                        offset: 0,
                        reason: format!("record {seq} is not an access record"),
                    });
                };
                replayed += 1;
                audit::insert(&tx, *seq, prev, hash, &entry, key)
            }
            Frame::Outcome { of, json } => audit::complete(&tx, *of, json),
        };
        written.map_err(|e| JournalError::Io {
            path: db.to_path_buf(),
            source: std::io::Error::other(e),
        })
    })?;
    // Outcomes of records already in the index (written again: the same row).
    for f in &frames {
        if let Frame::Outcome { of, json } = f
            && *of <= head.seq
        {
            audit::complete(&tx, *of, json).map_err(&sqlite)?;
        }
    }
    tx.commit().map_err(&sqlite)?;
    if let Some(t) = torn {
        let mut name = t.segment.as_os_str().to_os_string();
        name.push(".torn");
        let kept = PathBuf::from(name);
        std::fs::write(&kept, &t.bytes).map_err(io_error(&kept))?;
        tracing::warn!(
            segment = %t.segment.display(), offset = t.offset, bytes = t.bytes.len(), kept = %kept.display(),
            "The audit journal ended in a torn write (the batch being written when the gateway stopped, never acknowledged); its bytes are kept."
        );
    }
    for s in &segments {
        std::fs::remove_file(&s.path).map_err(io_error(&s.path))?;
    }
    sync_folder(&dir)?;
    if replayed > 0 {
        tracing::info!(
            records = replayed,
            head = head.seq,
            "Audit journal replayed into the index."
        );
    }
    Ok(Recovered {
        head,
        next_segment: segments.last().map_or(1, |s| s.number + 1),
    })
}

/// Makes the folder's entries (a segment created or removed) durable.
pub(super) fn sync_folder(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

// ----------------------------------------------------------------------------------------------
// The segment being written
// ----------------------------------------------------------------------------------------------

/// The segment the writer appends to.
pub(super) struct Tail {
    dir: PathBuf,
    pub(super) number: u64,
    pub(super) file: Arc<File>,
    /// Where the last complete batch ends.
    len: u64,
}

impl Tail {
    /// Creates segment `number` in `dir` (it must not exist).
    pub(super) fn create(dir: &Path, number: u64) -> Result<Tail, JournalError> {
        let path = segment_path(dir, number);
        let file = File::options()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        sync_folder(dir)?;
        Ok(Tail {
            dir: dir.to_path_buf(),
            number,
            file: Arc::new(file),
            len: 0,
        })
    }

    /// Writes one batch (durable only once the file is synced). A batch that could not be
    /// written whole is cut off again, so the next one starts on a frame boundary.
    pub(super) fn append(&mut self, batch: &[u8]) -> std::io::Result<()> {
        match self.file.write_all_at(batch, self.len) {
            Ok(()) => {
                self.len += batch.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Past its size, the segment is synced and the next one created; `None` when it is not
    /// full yet. An error syncing is returned; one creating the next segment only means this
    /// one goes on growing (tried again after the next batch).
    pub(super) fn rotate(&mut self) -> std::io::Result<()> {
        if self.len < SEGMENT_BYTES {
            return Ok(());
        }
        self.file.sync_data()?;
        match Tail::create(&self.dir, self.number + 1) {
            Ok(next) => *self = next,
            Err(e) => {
                tracing::warn!(error = %e, "Next audit journal segment not created; the current one grows.");
            }
        }
        Ok(())
    }

    /// Removes the segments before `number` (the indexer, once they are in the durable index).
    pub(super) fn remove_before(dir: &Path, from: u64, number: u64) {
        for n in from..number {
            let path = segment_path(dir, n);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "Indexed audit journal segment not removed.");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: i64) -> (Vec<u8>, Head) {
        let mut buf = Vec::new();
        let mut head = Head::genesis();
        for i in 1..=n {
            let json = format!(r#"{{"n":{i}}}"#);
            let next = head.next(&json);
            put_record(&mut buf, next.seq, &head.hash, &next.hash, &json);
            head = next;
        }
        (buf, head)
    }

    fn segment(dir: &Path, n: u64, bytes: &[u8]) {
        std::fs::write(segment_path(dir, n), bytes).unwrap();
    }

    #[test]
    fn frames_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut buf, _) = records(3);
        put_outcome(&mut buf, 2, r#"{"outcome":"served"}"#);
        segment(dir.path(), 1, &buf);
        let (frames, torn) = scan(&list(dir.path()).unwrap()).unwrap();
        assert_eq!(torn, None);
        assert_eq!(frames.len(), 4);
        assert!(matches!(&frames[3], Frame::Outcome { of: 2, json } if json.contains("served")));
        let head = past(&frames, &Head::genesis(), dir.path(), |_| Ok(())).unwrap();
        assert_eq!(head.seq, 3);
    }

    #[test]
    fn bad_bytes_at_the_end_are_a_torn_tail_and_anywhere_else_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (buf, _) = records(5);
        // The last batch cut off half-way: torn.
        segment(dir.path(), 1, &buf[..buf.len() - 7]);
        let (frames, torn) = scan(&list(dir.path()).unwrap()).unwrap();
        assert_eq!(frames.len(), 4);
        let torn = torn.unwrap();
        assert_eq!(torn.bytes.len(), buf.len() - 7 - torn.offset as usize);

        // One bit flipped in the second frame, valid frames after it: corruption.
        let mut flipped = buf.clone();
        let second = frame_at(&buf).unwrap().1 + HEADER + 20;
        flipped[second] ^= 1;
        segment(dir.path(), 1, &flipped);
        let e = scan(&list(dir.path()).unwrap()).err().unwrap();
        assert!(
            matches!(&e, JournalError::Corrupt { reason, .. } if reason.contains("checksum") && reason.contains("follows")),
            "{e}"
        );

        // Bad bytes at the end of a segment that a later one follows: corruption.
        segment(dir.path(), 1, &buf[..buf.len() - 7]);
        segment(dir.path(), 2, &records(1).0);
        let e = scan(&list(dir.path()).unwrap()).err().unwrap();
        assert!(
            matches!(&e, JournalError::Corrupt { reason, .. } if reason.contains("later one")),
            "{e}"
        );
    }

    #[test]
    fn records_that_do_not_follow_the_index_are_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (buf, _) = records(3);
        segment(dir.path(), 1, &buf);
        let (frames, _) = scan(&list(dir.path()).unwrap()).unwrap();
        // An index whose head is not record 1's: record 2 does not link to it.
        let other = Head {
            seq: 1,
            hash: "ab".repeat(32),
        };
        let e = past(&frames, &other, dir.path(), |_| Ok(())).err().unwrap();
        assert!(e.to_string().contains("record 2 does not follow"), "{e}");
        // An index that ends before the journal starts: records missing.
        let mut late = Vec::new();
        let h = Head::genesis();
        let next = Head {
            seq: 5,
            hash: chain_hash(&h.hash, 5, "{}"),
        };
        put_record(&mut late, 5, &h.hash, &next.hash, "{}");
        segment(dir.path(), 1, &late);
        let (frames, _) = scan(&list(dir.path()).unwrap()).unwrap();
        let e = past(&frames, &Head::genesis(), dir.path(), |_| Ok(()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("records are missing"), "{e}");
    }
}
