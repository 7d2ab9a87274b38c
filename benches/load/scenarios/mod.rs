//! The load generator's parts, one module each; every part prints its runs and appends its
//! summary rows (see `report`).

pub mod attribute;
pub mod burst;
pub mod cached;
pub mod fanout;
pub mod memory;
pub mod saturation;

use ketenportaal::bsn::Bsn;

/// `count` valid BSNs (11-proef), spread over the number space, none of them the demo ones.
pub fn subjects(count: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(count);
    let mut prefix: u64 = 10_000_000;
    while out.len() < count && prefix < 100_000_000 {
        let digits: Vec<u64> = format!("{prefix:08}")
            .bytes()
            .map(|b| u64::from(b - b'0'))
            .collect();
        let sum: u64 = digits
            .iter()
            .enumerate()
            .map(|(i, d)| (9 - i as u64) * d)
            .sum();
        // 9A+…+2H − I ≡ 0 (mod 11), so the last digit is the weighted sum mod 11.
        let check = sum % 11;
        if check < 10 {
            let s = format!("{prefix:08}{check}");
            if Bsn::parse(&s).is_ok() {
                out.push(s);
            }
        }
        prefix += 617;
    }
    out
}
