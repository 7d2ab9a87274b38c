//! JSON written straight into a byte buffer, byte for byte as `serde_json` writes the same
//! values, for documents made on every request whose shape is fixed (a dossier answer's
//! envelope and source reports): keys are literals, strings without anything to escape are
//! copied whole, numbers go through `itoa`. Anything else is left to `serde_json`.

use chrono::{DateTime, Utc};

/// `s` as a JSON string.
pub(crate) fn str(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Whether `b` holds a byte serde_json escapes: a control character, `"` or `\\` (not `/`,
/// not non-ASCII). Eight bytes at a time: a byte-wise test was most of a dossier answer's
/// envelope.
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of `x` is below `n` (n <= 0x80): exact for "some", whatever the others are.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let has = |x: u64, c: u8| below(x ^ (ONES * u64::from(c)), 1);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_ne_bytes(w);
        if below(x, 0x20) || has(x, b'"') || has(x, b'\\') {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

/// `s` as a JSON string, or `null`.
pub(crate) fn opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON array of `items`, each written by `each`.
pub(crate) fn array<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut each: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, item);
    }
    out.push(b']');
}

/// `n` as a JSON number.
pub(crate) fn u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `t` as [`crate::timefmt`] serialises it (RFC 3339, `Z`).
pub(crate) fn time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    // Digits and separators only: nothing to escape.
    out.push(b'"');
    out.extend_from_slice(crate::timefmt::rfc3339(t).as_bytes());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_numbers_and_times_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "uwv-uitkeringen",
            "a \"quoted\" name",
            "back\\slash",
            "tab\there",
            "new\nline",
            "\u{1}\u{1f}",
            "/path/ and ünïcødé €",
            "\u{7f}",
            // Each special byte at each place of an eight-byte word, and past it.
            "abcdefg\"",
            "\"bcdefgh",
            "abcdefgh\\",
            "abcdefghijklmno\u{1f}",
            "ééééééé\u{0}",
            "\u{80}\u{ff}ÿ€ long text without anything to escape in it at all",
        ] {
            let mut out = Vec::new();
            str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        // Every ASCII byte at every place of a string spanning two words and a remainder.
        for at in 0..19 {
            for c in 0u8..0x80 {
                let mut b = b"0123456789abcdefghi".to_vec();
                b[at] = c;
                let s = std::str::from_utf8(&b).unwrap();
                let mut out = Vec::new();
                str(&mut out, s);
                assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
            }
        }
        for n in [0, 7, 10, 999, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            u64(&mut out, n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap());
        }
        for (items, json) in [
            (vec![], "[]"),
            (vec!["a"], "[\"a\"]"),
            (vec!["a", "b\""], "[\"a\",\"b\\\"\"]"),
        ] {
            let mut out = Vec::new();
            array(&mut out, items, str);
            assert_eq!(String::from_utf8(out).unwrap(), json);
        }
        for (v, json) in [(None, "null"), (Some("x"), "\"x\"")] {
            let mut out = Vec::new();
            opt_str(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), json);
        }
        let t = chrono::DateTime::from_timestamp(1_764_355_219, 123_000_000).unwrap();
        let mut out = Vec::new();
        time(&mut out, &t);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"2025-11-28T18:40:19.123Z\""
        );
    }
}
