//! The audit journal: the embedded backend's durability point. Records and outcomes are
//! appended to it in CRC-framed batches, one `write` and one `fdatasync` per batch; the SQLite
//! file is the *index*, filled from it in large transactions off the request path (see
//! `writer`). This file knows the format on disk, how a folder of segments is read back, and
//! what recovery does with it; no threads.
//!
//! # Format
//! The journal is a folder beside the SQLite file, `<file>.journal/`, of segments named by a
//! counter (`000000000001.kpj`, ...); the writer starts a new one past [`SEGMENT_BYTES`], and
//! the indexer deletes a segment once all of it is in the index and the index is durable. Once
//! a segment is half full (or, one that grows, after [`GROWING_FOR`] batches), the next one is
//! made ahead of use: a file of [`SEGMENT_BYTES`] zeros, written and synced in the background
//! (`spare.kpj.next`), renamed into place when the writer rotates. Batches then overwrite
//! blocks the file already has, so the `fdatasync` after each writes data only, not the file's
//! new size through the file system's journal (half the latency and CPU per sync on this
//! machine's ext4, see `Tail::rotate`). A segment is a sequence of frames, and may end in
//! zeros (the part of a made-ahead file not yet written):
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
//! bytes at the end of the last segment, with no valid frame after them (zeros after them are
//! the unwritten rest of the file). Recovery keeps them in a `.torn` file beside the segment
//! and goes on. Zeros alone after the last frame are a clean end, in any segment: records lost
//! at the end of a segment that a later one follows break the chain, which is checked. Bad
//! bytes anywhere else (a valid frame after them, or in a segment already closed), or a record
//! that does not follow the chain, are corruption: the store refuses to open, names the
//! segment and the byte, and drops nothing.

use std::fs::File;
use std::io::{ErrorKind, Read as _};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::Hmac;
use rusqlite::{Connection, TransactionBehavior};
use sha2::Sha256;

use super::audit;
use crate::store::audit::{Entry, Head};

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

/// The next segment's file, zeros written and synced, waiting to be renamed into place. Not a
/// segment to [`list`]: it holds no frames.
const SPARE: &str = "spare.kpj.next";
/// The spare while it is being written (renamed to [`SPARE`] once whole and synced).
const SPARE_PART: &str = "spare.kpj.part";
/// How much of the spare is written between two syncs: the device queue stays short, so the
/// appender's `fdatasync` meanwhile does not wait behind 64 MiB of zeros.
const SPARE_CHUNK: usize = 8 << 20;
/// The batches after which a segment that grows (the first after a start) starts the spare,
/// and gives way to it as soon as it is whole, full or not: a quiet gateway, whose batches hold
/// one record each and which would take hours to fill half a segment, gets its syncs cheap
/// within seconds too. A store that writes fewer batches (a test) never writes a spare.
const GROWING_FOR: u64 = 1000;

/// The unit the journal writes in: every write starts and ends on a multiple of it, and its
/// memory is aligned to it, as `O_DIRECT` asks (4 KiB covers 512-byte and 4 KiB sectors).
const PAGE: usize = 4096;

/// Opens `path` for writing past the page cache (`O_DIRECT`) where the file system allows it,
/// else through it (tmpfs, some network file systems); whether it is direct.
fn open_for_writing(path: &Path, create: bool) -> std::io::Result<(File, bool)> {
    let open = |flags: i32| {
        let mut o = File::options();
        o.write(true).custom_flags(flags);
        if create {
            o.create_new(true);
        }
        o.open(path)
    };
    match open(libc::O_DIRECT) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // Created already if `create` got that far: open it as it is.
            let f = if create && std::fs::exists(path)? {
                File::options().write(true).open(path)?
            } else {
                open(0)?
            };
            Ok((f, false))
        }
        Err(e) => Err(e),
    }
}

/// Writes `buf` at `at`, past the page cache when `*direct`. A direct write the file system
/// refuses (`EINVAL`: opened, but it wants a larger alignment) is made through the page cache
/// instead, on the file opened again by `reopen`; that file is returned, to write to from now
/// on, and `*direct` is cleared.
fn write_all_at(
    file: &File,
    direct: &mut bool,
    buf: &[u8],
    at: u64,
    reopen: impl FnOnce() -> std::io::Result<File>,
) -> std::io::Result<Option<File>> {
    match file.write_all_at(buf, at) {
        Err(e) if *direct && e.raw_os_error() == Some(libc::EINVAL) => {
            let buffered = reopen()?;
            buffered.write_all_at(buf, at)?;
            *direct = false;
            Ok(Some(buffered))
        }
        written => written.map(|()| None),
    }
}

/// A buffer handing out [`PAGE`]-aligned slices of itself (safe code: a page more is
/// allocated than asked for, and the aligned part used).
#[derive(Default)]
struct Aligned {
    buf: Vec<u8>,
}

impl Aligned {
    /// `len` bytes (a multiple of [`PAGE`]), aligned, holding what the last call left there
    /// (zeros where none did); the memory is kept for the next call.
    fn get(&mut self, len: usize) -> &mut [u8] {
        if self.buf.len() < len + PAGE {
            self.buf.resize(len + PAGE, 0);
        }
        let start = self.buf.as_ptr().align_offset(PAGE).min(PAGE);
        &mut self.buf[start..start + len]
    }
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
                    // The bytes past the last frame that are not the file's unwritten zeros.
                    let end = data[at..]
                        .iter()
                        .rposition(|&b| b != 0)
                        .map_or(at, |last| at + last + 1);
                    if end == at {
                        break;
                    }
                    let corrupt = |reason: String| JournalError::Corrupt {
                        segment: s.path.clone(),
                        offset: at as u64,
                        reason,
                    };
                    if let Some(next) = next_frame(&data[..end], at + 1) {
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
                        bytes: data[at..end].to_vec(),
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
    let mut chain = *head;
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
                // The record links to the head, and its hash is the head's next.
                let next = chain.next(json);
                if *prev != chain.hash.as_str() || next.hash.as_str() != hash {
                    return Err(corrupt(format!(
                        "record {seq} does not follow the chain (changed, or not written by this store)"
                    )));
                }
                chain = next;
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
    let mut rows = audit::Rows::new(&tx, key).map_err(&sqlite)?;
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
                rows.insert(*seq, prev, hash, &entry)
            }
            Frame::Outcome { of, json } => rows.complete(*of, json),
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
            rows.complete(*of, json).map_err(&sqlite)?;
        }
    }
    drop(rows);
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
    // A spare whose writing a stop cut short (a whole one is kept, for the first segment).
    let part = dir.join(SPARE_PART);
    match std::fs::remove_file(&part) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(io_error(&part)(e).into()),
        _ => {}
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
    /// Whether `file` is written past the page cache (`O_DIRECT`).
    direct: bool,
    /// Where the last complete batch ends.
    len: u64,
    /// The bytes of the last, partly written [`PAGE`] (from its start to `len`): each batch
    /// writes whole pages, starting with this one again.
    partial: Vec<u8>,
    /// The buffer each batch is written from.
    out: Aligned,
    /// The size past which the next segment starts ([`SEGMENT_BYTES`]; smaller in tests).
    limit: u64,
    /// The spare being written in the background, if one is.
    spare: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    /// Whether this segment was a spare (else it grows as it is written).
    made_ahead: bool,
    /// The batches written to this segment.
    batches: u64,
    /// Whether this segment has started a spare (or was handed one still being written).
    spare_tried: bool,
    /// Whether that spare is whole (its thread ended well).
    spare_whole: bool,
    /// After how many batches a segment that grows starts the spare ([`GROWING_FOR`]).
    growing_for: u64,
}

impl Tail {
    /// Opens segment `number` in `dir` (it must not exist): the spare renamed into place when
    /// there is one (left by an earlier run, or made while the last segment filled), else a new
    /// empty file that grows as it is written.
    pub(super) fn create(dir: &Path, number: u64) -> Result<Tail, JournalError> {
        Tail::with_limits(dir, number, SEGMENT_BYTES, GROWING_FOR)
    }

    fn with_limits(
        dir: &Path,
        number: u64,
        limit: u64,
        growing_for: u64,
    ) -> Result<Tail, JournalError> {
        let path = segment_path(dir, number);
        if std::fs::exists(&path).map_err(io_error(&path))? {
            return Err(io_error(&path)(std::io::Error::new(
                ErrorKind::AlreadyExists,
                "the next segment exists already",
            )));
        }
        let spare = dir.join(SPARE);
        let (file, made_ahead) = match std::fs::rename(&spare, &path) {
            Ok(()) => {
                let opened = open_for_writing(&path, false);
                if opened.is_err() {
                    // Not left in the way of the next try (the spare holds no records).
                    let _ = std::fs::rename(&path, &spare);
                }
                (opened, true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => (open_for_writing(&path, true), false),
            Err(e) => (Err(e), false),
        };
        let (file, direct) = file.map_err(io_error(&path))?;
        sync_folder(dir)?;
        Ok(Tail {
            dir: dir.to_path_buf(),
            number,
            file: Arc::new(file),
            direct,
            len: 0,
            partial: Vec::with_capacity(PAGE),
            out: Aligned::default(),
            limit,
            spare: None,
            made_ahead,
            batches: 0,
            spare_tried: false,
            spare_whole: false,
            growing_for,
        })
    }

    /// Writes one batch (durable only once the file is synced). A batch that could not be
    /// written whole is cut off again, so the next one starts on a frame boundary (and no
    /// frame of it is left for a later, shorter batch to end in front of).
    ///
    /// Whole pages, past the page cache where the file system allows: the last partly written
    /// page again, then the batch, padded with zeros to the end of its last page (zeros after
    /// the last frame are a clean end). So the kernel never reads a page before writing it,
    /// and each `fdatasync` writes this batch's pages alone. Through the page cache, a spare's
    /// zeros sit in large folios (1 MiB on this machine's ext4), and a sync writes back every
    /// dirty folio whole: 1 MiB to the disk per batch (`/proc/<pid>/io` `write_bytes`: 61 KB
    /// per uncached dossier in load bench (f), against 1.6 KB written past it). The page
    /// rewritten at the start holds acknowledged records: PostgreSQL's WAL rewrites its last
    /// page in the same way.
    pub(super) fn append(&mut self, batch: &[u8]) -> std::io::Result<()> {
        let start = self.len - self.partial.len() as u64;
        let data = self.partial.len() + batch.len();
        let out = self.out.get(data.next_multiple_of(PAGE));
        out[..self.partial.len()].copy_from_slice(&self.partial);
        out[self.partial.len()..data].copy_from_slice(batch);
        out[data..].fill(0);
        let written = write_all_at(&self.file, &mut self.direct, out, start, || {
            File::options()
                .write(true)
                .open(segment_path(&self.dir, self.number))
        });
        match written {
            Ok(reopened) => {
                if let Some(f) = reopened {
                    self.file = Arc::new(f);
                }
                self.len += batch.len() as u64;
                let keep = (self.len % PAGE as u64) as usize;
                self.partial.clear();
                self.partial.extend_from_slice(&out[data - keep..data]);
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Called after each batch. Half-way through the segment, or after [`GROWING_FOR`] batches
    /// in one that grows, the spare for the next one is started (if none is being written).
    /// Past its size, or in a segment that grows once the spare is whole, the segment is synced
    /// and the next one opened. An error syncing is returned; one opening the next segment only
    /// means this one goes on growing (tried again after the next batch).
    ///
    /// Why the spare: `fdatasync` after a write that made the file longer also commits the new
    /// size through ext4's journal; after one into blocks the file has, it writes the data
    /// alone. On this machine (a virtual disk), 2,000 batches of 45 KB, each written and
    /// synced, took 250-262 µs and 111-123 µs of CPU per batch appended to a growing file,
    /// against 133-149 µs and 58-68 µs written over zeros; 110-118 and 47-51 µs against
    /// 180-182 and 67-74 µs for batches of 4 KB. Writing the spare costs a fraction of a µs
    /// per record (see [`make_spare`]).
    pub(super) fn rotate(&mut self) -> std::io::Result<()> {
        self.batches += 1;
        let growing = !self.made_ahead;
        // One try per segment: a spare that cannot be written (a full disk, a file size limit)
        // is not tried again batch after batch.
        if !self.spare_tried
            && (self.len >= self.limit / 2 || growing && self.batches >= self.growing_for)
        {
            self.start_spare();
        }
        if let Some(done) = self.spare.take_if(|h| h.is_finished()) {
            self.spare_whole = match done.join() {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "The next audit journal segment was not made ahead; it grows as it is written.");
                    false
                }
                Err(_) => {
                    tracing::warn!(
                        "The thread making the next audit journal segment ahead failed."
                    );
                    false
                }
            };
        }
        if self.len < self.limit && !(growing && self.spare_whole) {
            return Ok(());
        }
        self.file.sync_data()?;
        // The spare is renamed into place if it is whole; one still being written is for the
        // segment after (this one, or that one if it grows, gives way to it once it is whole).
        match Tail::with_limits(&self.dir, self.number + 1, self.limit, self.growing_for) {
            Ok(mut next) => {
                next.spare = self.spare.take();
                next.spare_tried = next.spare.is_some();
                *self = next;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Next audit journal segment not created; the current one grows.");
            }
        }
        Ok(())
    }

    /// Starts writing the spare in a thread of its own, at the writers' lower priority.
    fn start_spare(&mut self) {
        let (dir, bytes) = (self.dir.clone(), self.limit);
        let spawned = std::thread::Builder::new()
            .name("audit-journal-spare".into())
            .spawn(move || {
                super::yield_to_requests();
                make_spare(&dir, bytes)
            });
        self.spare_tried = true;
        match spawned {
            Ok(h) => self.spare = Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot start the thread that makes the next audit journal segment ahead.");
            }
        }
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

/// Writes the spare: `bytes` zeros (rounded up to whole pages), synced a chunk at a time, then
/// renamed into place (a spare is whole when it has its name). One already there is kept.
///
/// Past the page cache where the file system allows (`O_DIRECT`, as the batches are): the
/// kernel neither clears nor copies a page of it (1.7 µs of CPU per cached dossier in load
/// bench (a) through the cache, against 0.2 µs), and no large folio of zeros is left in the
/// cache for each batch's sync to write back whole. The batches write whole pages, so none is
/// read from the disk first.
pub(super) fn make_spare(dir: &Path, bytes: u64) -> std::io::Result<()> {
    let spare = dir.join(SPARE);
    if std::fs::exists(&spare)? {
        return Ok(());
    }
    let part = dir.join(SPARE_PART);
    // One left by a run that stopped half-way is written again from the start.
    match std::fs::remove_file(&part) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let (mut file, mut direct) = open_for_writing(&part, true)?;
    let bytes = bytes.next_multiple_of(PAGE as u64);
    // Small, so the spare adds next to nothing to the gateway's memory.
    let mut buf = Aligned::default();
    let zeros = buf.get(1 << 20);
    let mut at = 0;
    while at < bytes {
        let n = zeros.len().min((bytes - at) as usize);
        if let Some(f) = write_all_at(&file, &mut direct, &zeros[..n], at, || {
            File::options().write(true).open(&part)
        })? {
            file = f;
        }
        at += n as u64;
        if at % SPARE_CHUNK as u64 == 0 || at >= bytes {
            file.sync_data()?;
        }
    }
    file.sync_all()?;
    std::fs::rename(&part, &spare)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::{HexHash, chain_hash};

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
    fn zeros_after_the_last_frame_are_a_clean_end_and_bad_bytes_before_them_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (buf, _) = records(4);
        // A made-ahead segment, partly written: the frames, then the file's zeros.
        let mut ahead = buf.clone();
        ahead.resize(buf.len() + 5000, 0);
        segment(dir.path(), 1, &ahead);
        let (frames, torn) = scan(&list(dir.path()).unwrap()).unwrap();
        assert_eq!((frames.len(), torn), (4, None));

        // A batch torn part-way into the zeros: its bytes are the torn tail, not the zeros.
        let mut torn_ahead = ahead.clone();
        torn_ahead[buf.len()..buf.len() + 30].copy_from_slice(&buf[..30]);
        segment(dir.path(), 1, &torn_ahead);
        let (frames, torn) = scan(&list(dir.path()).unwrap()).unwrap();
        let torn = torn.unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(
            (torn.offset, torn.bytes),
            (buf.len() as u64, buf[..30].to_vec())
        );

        // Zeros where frames were, and a valid frame after them: corruption, not an end.
        let mut holed = buf.clone();
        let first = frame_at(&buf).unwrap().1;
        holed[first..first + 40].fill(0);
        segment(dir.path(), 1, &holed);
        let e = scan(&list(dir.path()).unwrap()).err().unwrap();
        assert!(
            matches!(&e, JournalError::Corrupt { offset, reason, .. } if *offset == first as u64 && reason.contains("follows")),
            "{e}"
        );

        // Zeros closing a segment that a later one follows: the chain says what is missing.
        let (more, _) = records(6);
        // The records are the same size: records 1, then 5 and 6.
        let size = frame_at(&more).unwrap().1;
        let mut cut = more[..size].to_vec();
        cut.resize(size + 100, 0);
        segment(dir.path(), 1, &cut);
        segment(dir.path(), 2, &more[4 * size..]);
        let (frames, _) = scan(&list(dir.path()).unwrap()).unwrap();
        let e = past(&frames, &Head::genesis(), dir.path(), |_| Ok(()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("records are missing"), "{e}");
    }

    #[test]
    fn batches_are_written_as_whole_pages_over_the_last_one_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut tail = Tail::with_limits(dir.path(), 1, 64 << 20, GROWING_FOR).unwrap();
        // Past the page cache exactly when the file system allows it (ext4 here; tmpfs
        // before Linux 6.6 does not).
        let probe = File::options()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.path().join("probe"));
        assert_eq!(tail.direct, probe.is_ok());
        // Batches of 1 to 60 records: they end anywhere in a page, span pages, and fill one.
        let (all, _) = records(600);
        let mut frames_at = vec![0];
        let mut rest = &all[..];
        while !rest.is_empty() {
            let (_, n) = frame_at(rest).unwrap();
            frames_at.push(frames_at.last().unwrap() + n);
            rest = &rest[n..];
        }
        let (mut from, mut k) = (0, 0);
        while from < 600 {
            let n = (k % 60 + 1).min(600 - from);
            tail.append(&all[frames_at[from]..frames_at[from + n]])
                .unwrap();
            from += n;
            k += 7;
            let on_disk = std::fs::read(segment_path(dir.path(), 1)).unwrap();
            assert_eq!(on_disk.len() % PAGE, 0);
            assert_eq!(&on_disk[..frames_at[from]], &all[..frames_at[from]]);
            assert!(on_disk[frames_at[from]..].iter().all(|b| *b == 0));
        }
        let (frames, torn) = scan(&list(dir.path()).unwrap()).unwrap();
        assert_eq!((frames.len(), torn), (600, None));
    }

    #[test]
    fn half_way_through_a_segment_the_next_is_made_ahead_and_then_used() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 64 << 10;
        let mut tail = Tail::with_limits(dir.path(), 1, limit, GROWING_FOR).unwrap();
        let (batch, _) = records(40);
        let mut written = 0;
        let mut append = |tail: &mut Tail| {
            tail.append(&batch).unwrap();
            written += 40;
            tail.rotate().unwrap();
        };
        // The first segment grows as it is written; half-way, the spare is started.
        let first = segment_path(dir.path(), 1);
        while tail.spare.is_none() {
            append(&mut tail);
        }
        assert!(tail.len >= limit / 2 && tail.len < limit);
        // Whole pages are written: the file ends at the end of the last one.
        assert_eq!(
            std::fs::metadata(&first).unwrap().len(),
            tail.len.next_multiple_of(PAGE as u64)
        );
        // Once written (here: waited for), the next segment is the spare, renamed.
        for _ in 0..500 {
            if tail.spare.as_ref().is_some_and(|h| h.is_finished()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            std::fs::metadata(dir.path().join(SPARE)).unwrap().len(),
            limit
        );
        while tail.number == 1 {
            append(&mut tail);
        }
        assert!(!std::fs::exists(dir.path().join(SPARE)).unwrap());
        let second = segment_path(dir.path(), 2);
        assert_eq!(std::fs::metadata(&second).unwrap().len(), limit);
        // Written over the zeros: the size stays, and every frame reads back, with no tear.
        append(&mut tail);
        assert_eq!(std::fs::metadata(&second).unwrap().len(), limit);
        let (frames, torn) = scan(&list(dir.path()).unwrap()).unwrap();
        assert_eq!((frames.len(), torn), (written, None));
        // Neither a spare nor one being written is a segment.
        make_spare(dir.path(), limit).unwrap();
        std::fs::write(dir.path().join(SPARE_PART), [0u8; 10]).unwrap();
        assert_eq!(list(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn a_segment_that_grows_gives_way_to_the_spare_after_a_number_of_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (batch, _) = records(1);
        let mut tail = Tail::with_limits(dir.path(), 1, 1 << 20, 5).unwrap();
        for _ in 0..4 {
            tail.append(&batch).unwrap();
            tail.rotate().unwrap();
        }
        assert!(tail.spare.is_none(), "not before the fifth batch");
        tail.append(&batch).unwrap();
        tail.rotate().unwrap();
        assert!(tail.spare.is_some());
        // Far from full, the segment gives way once the spare is whole.
        let mut batches = 5;
        for _ in 0..1000 {
            if tail.number > 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
            tail.append(&batch).unwrap();
            tail.rotate().unwrap();
            batches += 1;
        }
        assert_eq!(tail.number, 2);
        assert!(tail.made_ahead && tail.spare.is_none());
        assert_eq!(
            std::fs::metadata(segment_path(dir.path(), 2))
                .unwrap()
                .len(),
            1 << 20
        );
        // A segment made ahead waits until it is half full for the next spare.
        for _ in 0..10 {
            tail.append(&batch).unwrap();
            tail.rotate().unwrap();
            batches += 1;
        }
        assert!(tail.spare.is_none());
        let (frames, torn) = scan(&list(dir.path()).unwrap()).unwrap();
        assert_eq!((frames.len(), torn), (batches, None));
    }

    #[test]
    fn a_spare_that_cannot_be_written_is_tried_once_and_the_segment_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (batch, _) = records(1);
        let mut tail = Tail::with_limits(dir.path(), 1, 1 << 20, 3).unwrap();
        // The spare's name is taken by a folder: renaming the part onto it fails.
        std::fs::create_dir(dir.path().join(SPARE_PART)).unwrap();
        for _ in 0..3 {
            tail.append(&batch).unwrap();
            tail.rotate().unwrap();
        }
        assert!(tail.spare_tried);
        for _ in 0..500 {
            if tail.spare.as_ref().is_none_or(|h| h.is_finished()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for _ in 0..20 {
            tail.append(&batch).unwrap();
            tail.rotate().unwrap();
        }
        // No early rotation onto a spare that is not there, and no second try.
        assert_eq!(tail.number, 1);
        assert!(tail.spare.is_none() && !tail.spare_whole);
        assert_eq!(list(dir.path()).unwrap().len(), 1);
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
            hash: HexHash::from_stored(&"ab".repeat(32)),
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
