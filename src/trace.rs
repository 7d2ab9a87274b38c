//! W3C Trace Context (`traceparent`): accepted from callers, propagated to every adapter call.

use rand::Rng;

/// A trace id with the current span id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    pub span_id: String,
    /// The caller's span, when the caller sent a `traceparent` (a foreign operation).
    pub parent_span_id: Option<String>,
    pub flags: String,
}

/// `N` random bytes as lower-case hex. From the thread's ChaCha12 generator (seeded from the
/// OS and reseeded every 64 KiB), not a `getrandom` system call per id: ids must be
/// unpredictable, and a request makes one per adapter call.
fn hex_id<const N: usize>() -> String {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    crate::lower_hex(&b)
}

impl TraceContext {
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: hex_id::<16>(),
            span_id: hex_id::<8>(),
            parent_span_id: None,
            flags: "01".into(),
        }
    }

    /// Continues an incoming `traceparent` (version 00) with a new span, or starts a new trace
    /// when it is absent or malformed.
    pub fn from_header(h: Option<&str>) -> Self {
        let Some(h) = h else { return Self::new_root() };
        let parts: Vec<&str> = h.trim().split('-').collect();
        let is_hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        match parts.as_slice() {
            [v, t, p, f]
                if is_hex(v, 2)
                    && *v != "ff"
                    && is_hex(t, 32)
                    && *t != "0".repeat(32)
                    && is_hex(p, 16)
                    && *p != "0".repeat(16)
                    && is_hex(f, 2) =>
            {
                TraceContext {
                    trace_id: t.to_string(),
                    span_id: hex_id::<8>(),
                    parent_span_id: Some(p.to_string()),
                    flags: f.to_string(),
                }
            }
            _ => Self::new_root(),
        }
    }

    /// A child span for an outgoing call.
    pub fn child(&self) -> Self {
        TraceContext {
            trace_id: self.trace_id.clone(),
            span_id: hex_id::<8>(),
            parent_span_id: Some(self.span_id.clone()),
            flags: self.flags.clone(),
        }
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_lower_case_hex_of_the_right_length_and_differ() {
        let (a, b) = (TraceContext::new_root(), TraceContext::new_root());
        let hex = |s: &str| s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        assert_eq!((a.trace_id.len(), a.span_id.len()), (32, 16));
        assert!(hex(&a.trace_id) && hex(&a.span_id), "{a:?}");
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
    }

    #[test]
    fn continues_a_valid_parent_and_rejects_junk() {
        let t = TraceContext::from_header(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_eq!(c.parent_span_id.as_deref(), Some(t.span_id.as_str()));
        let junk = TraceContext::from_header(Some("00-XYZ-1-01"));
        assert!(junk.parent_span_id.is_none());
        assert_eq!(junk.trace_id.len(), 32);
    }
}
