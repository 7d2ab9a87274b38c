//! RFC 3339 timestamps written straight into a stack buffer, in exactly the form chrono's serde
//! gives a `DateTime<Utc>` (`2026-11-28T18:53:39.123Z`: the fraction in 0, 3, 6 or 9 digits,
//! whichever shows it exactly; `Z`).
//!
//! chrono serialises through `Display` and `collect_str`, which serde_json escapes character by
//! character: a dossier answer carries one timestamp per source and two more go into its access
//! record, and profiling the cached path put them at ~5 % of the request's CPU. Use
//! `#[serde(with = "crate::timefmt")]` (or `timefmt::option`) on hot-path fields.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::Serializer;

/// A formatted timestamp (at most `-YYYYYY-MM-DDTHH:MM:SS.fffffffffZ`, 35 bytes).
pub struct Rfc3339 {
    buf: [u8; 40],
    len: usize,
}

impl Rfc3339 {
    /// ASCII digits and separators (or a chrono string copied whole).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are written, or a chrono string copied whole.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// `t` in RFC 3339 with `Z`, as chrono's serde writes it.
pub fn rfc3339(t: &DateTime<Utc>) -> Rfc3339 {
    let mut out = Rfc3339 {
        buf: [0; 40],
        len: 0,
    };
    // The UTC fields from the naive time once: each of `DateTime`'s own accessors converts to
    // local time (adding a zero offset) again.
    let n = t.naive_utc();
    let (date, time) = (n.date(), n.time());
    let year = date.year();
    let nanos = time.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        // Years beyond four digits and leap seconds: rare, so chrono's own formatting.
        let s = t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let n = s.len().min(out.buf.len());
        out.buf[..n].copy_from_slice(&s.as_bytes()[..n]);
        out.len = n;
        return out;
    }
    let b = &mut out.buf;
    two(b, 0, year as u32 / 100);
    two(b, 2, year as u32 % 100);
    two(b, 5, date.month());
    two(b, 8, date.day());
    two(b, 11, time.hour());
    two(b, 14, time.minute());
    two(b, 17, time.second());
    // The fraction in 0, 3, 6 or 9 digits, whichever shows it exactly.
    let len = if nanos == 0 {
        19
    } else if nanos.is_multiple_of(1_000_000) {
        let ms = nanos / 1_000_000;
        one(b, 20, ms / 100);
        two(b, 21, ms % 100);
        23
    } else if nanos.is_multiple_of(1_000) {
        let us = nanos / 1_000;
        two(b, 20, us / 10_000);
        two(b, 22, us / 100 % 100);
        two(b, 24, us % 100);
        26
    } else {
        one(b, 20, nanos / 100_000_000);
        two(b, 21, nanos / 1_000_000 % 100);
        two(b, 23, nanos / 10_000 % 100);
        two(b, 25, nanos / 100 % 100);
        two(b, 27, nanos % 100);
        29
    };
    b[4] = b'-';
    b[7] = b'-';
    b[10] = b'T';
    b[13] = b':';
    b[16] = b':';
    if len > 19 {
        b[19] = b'.';
    }
    b[len] = b'Z';
    out.len = len + 1;
    out
}

/// "00" to "99".
const PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// `v` (below 100) in two digits at `at`.
fn two(b: &mut [u8; 40], at: usize, v: u32) {
    let i = 2 * (v as usize % 100);
    b[at] = PAIRS[i];
    b[at + 1] = PAIRS[i + 1];
}

/// `v` (below 10) in one digit at `at`.
fn one(b: &mut [u8; 40], at: usize, v: u32) {
    b[at] = b'0' + (v % 10) as u8;
}

/// `t` as chrono's `to_rfc3339()` writes it (`+00:00` for `Z`), the form the audit index's
/// `time` column holds.
pub fn rfc3339_offset(t: &DateTime<Utc>) -> String {
    let z = rfc3339(t);
    let z = z.as_str();
    let mut out = String::with_capacity(z.len() + 5);
    out.push_str(z.strip_suffix('Z').unwrap_or(z));
    out.push_str("+00:00");
    out
}

/// `#[serde(with = "crate::timefmt")]`: serialises like chrono, without per-character escaping.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(rfc3339(t).as_str())
}

/// `#[serde(with = "crate::timefmt::option")]`, for `Option<DateTime<Utc>>`.
pub mod option {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }
}

/// Deserialisation is chrono's (any RFC 3339 form), so `with` can be used on both directions.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    <DateTime<Utc> as serde::Deserialize>::deserialize(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn chrono_json(t: &DateTime<Utc>) -> String {
        serde_json::to_string(t).unwrap()
    }

    #[test]
    fn matches_chrono_for_every_fraction_length_and_the_edges() {
        let base = Utc.with_ymd_and_hms(2026, 11, 28, 18, 53, 39).unwrap();
        let mut cases = vec![
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 1, 0, 0, 0).unwrap(),
            // A leap second (nanos past one second).
            Utc.with_ymd_and_hms(2016, 12, 31, 23, 59, 59).unwrap()
                + chrono::Duration::nanoseconds(999_999_999),
        ];
        if let Some(leap) = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
        {
            cases.push(Utc.from_utc_datetime(&leap));
        }
        for nanos in [
            0,
            1,
            7,
            999,
            1_000,
            120_000,
            1_000_000,
            5_000_000,
            123_000_000,
            123_456_000,
            123_456_789,
            999_999_999,
        ] {
            cases.push(base + chrono::Duration::nanoseconds(nanos));
        }
        // A spread of ordinary instants across the calendar.
        let mut x: i64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = x.rem_euclid(253_402_300_799);
            let nanos = (x >> 20).rem_euclid(1_000_000_000) as u32;
            cases.push(Utc.timestamp_opt(secs, nanos).unwrap());
        }
        cases.push(Utc::now());
        for t in cases {
            assert_eq!(rfc3339_offset(&t), t.to_rfc3339(), "{t:?}");
            let mut ours = Vec::new();
            serialize(&t, &mut serde_json::Serializer::new(&mut ours)).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), chrono_json(&t), "{t:?}");
        }
    }
}
