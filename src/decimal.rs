//! Decimals as exact text.
//!
//! A `decimal` field is money in most chains, and the source's digits are part of the value:
//! `1520.00` must reach the portal as `1520.00`, not as the float `1520.0`. The dossier carries a
//! decimal as a JSON string in plain notation (`"1520.00"`, the `decimal` string format of the
//! OpenAPI format registry), cut from the source's own text. Two decimals are compared by
//! value (`131` equals `131.00`), never by text, so a difference in scale is no conflict.

use std::cmp::Ordering;

/// The largest exponent a JSON number may carry to be written out in plain notation; beyond
/// it the plain text would be a long run of zeros (`1e1000000`), which no amount is.
const MAX_EXPONENT: i64 = 64;

/// Source text in plain notation (`-12.50`, `0012` → `12`), or `None`: no exponent, no
/// thousands separator, no decimal comma, no sign other than a leading `-`. The fraction keeps
/// every digit it has; only redundant leading zeros of the integer part go.
pub fn parse_plain(s: &str) -> Option<String> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) if !f.is_empty() => (i, Some(f)),
        Some(_) => return None,
        None => (body, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !frac.is_none_or(digits) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let mut out = String::with_capacity(s.len());
    if neg {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    Some(out)
}

/// A JSON number's text as a plain decimal, every digit kept: `1520.00` stays `1520.00`, and an
/// exponent is written out exactly (`1.50e3` → `1500`, `15e-3` → `0.015`). `None` for text that
/// is not a JSON number, or whose exponent is beyond any amount.
pub fn from_json_number(text: &str) -> Option<String> {
    let (mantissa, exp) = match text.find(['e', 'E']) {
        None => return parse_plain(text),
        Some(i) => (&text[..i], &text[i + 1..]),
    };
    let exp: i64 = exp.strip_prefix('+').unwrap_or(exp).parse().ok()?;
    if exp.abs() > MAX_EXPONENT {
        return None;
    }
    let plain = parse_plain(mantissa)?;
    let (neg, body) = match plain.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, plain.as_str()),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits: String = [int, frac].concat();
    // Where the point falls in `digits` once the exponent is applied.
    let point = int.len() as i64 + exp;
    let mut out = String::with_capacity(digits.len() + exp.unsigned_abs() as usize + 3);
    if neg {
        out.push('-');
    }
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(&digits);
    } else if point as usize >= digits.len() {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
    } else {
        let (i, f) = digits.split_at(point as usize);
        out.push_str(i);
        out.push('.');
        out.push_str(f);
    }
    // Leading zeros of the integer part (`0.15e1` → `01.5`) go as in plain text.
    parse_plain(&out)
}

/// Sign, integer digits without leading zeros, fraction digits without trailing zeros; zero is
/// never negative.
fn parts(s: &str) -> Option<(bool, &str, &str)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let ok = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !ok(int) || !ok(frac) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    Some((neg && !(int.is_empty() && frac.is_empty()), int, frac))
}

/// Compares two plain decimals by value (`9.5` < `10.00`, `131` = `131.00`); `None` when either
/// is not a plain decimal.
pub fn cmp(a: &str, b: &str) -> Option<Ordering> {
    let (na, ia, fa) = parts(a)?;
    let (nb, ib, fb) = parts(b)?;
    let magnitude = ia
        .len()
        .cmp(&ib.len())
        .then_with(|| ia.cmp(ib))
        .then_with(|| fa.cmp(fb));
    Some(match (na, nb) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    })
}

/// The shortest text of the same value (`131.00` → `131`, `-0.0` → `0`), for keys.
pub fn canonical(s: &str) -> Option<String> {
    let (neg, int, frac) = parts(s)?;
    let mut out = String::with_capacity(s.len());
    if neg {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Some(out)
}

/// The decimal as a float, for rules (CEL has no decimal type); `None` when not a decimal.
pub fn to_f64(s: &str) -> Option<f64> {
    parts(s)?;
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_keeps_its_digits() {
        assert_eq!(parse_plain("1520.00").as_deref(), Some("1520.00"));
        assert_eq!(parse_plain("-12.50").as_deref(), Some("-12.50"));
        assert_eq!(parse_plain("0012").as_deref(), Some("12"));
        assert_eq!(parse_plain("000.10").as_deref(), Some("0.10"));
        assert_eq!(parse_plain("0").as_deref(), Some("0"));
        for bad in [
            "", "-", ".5", "5.", "1e5", "1.843,27", "1,5", "+1", "1 000", "--1", "0x10", "١٢",
        ] {
            assert_eq!(parse_plain(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn json_numbers_are_written_out_exactly() {
        assert_eq!(from_json_number("1520.00").as_deref(), Some("1520.00"));
        assert_eq!(from_json_number("131").as_deref(), Some("131"));
        assert_eq!(from_json_number("1.50e3").as_deref(), Some("1500"));
        assert_eq!(from_json_number("1.505E2").as_deref(), Some("150.5"));
        assert_eq!(from_json_number("15e-3").as_deref(), Some("0.015"));
        assert_eq!(from_json_number("-2.5e+1").as_deref(), Some("-25"));
        assert_eq!(from_json_number("0.15e1").as_deref(), Some("1.5"));
        assert_eq!(from_json_number("123e-1").as_deref(), Some("12.3"));
        assert_eq!(
            from_json_number("12345678901234567890.123456789").as_deref(),
            Some("12345678901234567890.123456789")
        );
        assert_eq!(from_json_number("1e1000000"), None);
        assert_eq!(from_json_number("1e"), None);
    }

    #[test]
    fn decimals_compare_by_value() {
        assert_eq!(cmp("131", "131.00"), Some(Ordering::Equal));
        assert_eq!(cmp("9.5", "10.00"), Some(Ordering::Less));
        assert_eq!(cmp("10.5", "10.49"), Some(Ordering::Greater));
        assert_eq!(cmp("-1", "0.5"), Some(Ordering::Less));
        assert_eq!(cmp("-2", "-10"), Some(Ordering::Greater));
        assert_eq!(cmp("-0.00", "0"), Some(Ordering::Equal));
        assert_eq!(cmp("007", "7.0"), Some(Ordering::Equal));
        assert_eq!(cmp("abc", "1"), None);
        assert_eq!(canonical("131.00").as_deref(), Some("131"));
        assert_eq!(canonical("-0.0").as_deref(), Some("0"));
        assert_eq!(canonical("0.50").as_deref(), Some("0.5"));
        assert_eq!(to_f64("1843.27"), Some(1843.27));
        assert_eq!(to_f64("1e5"), None);
    }
}
