//! The security officer's report over a period (Suwinet-style protocollering), whatever keeps
//! the log: a backend reads the period's `dossier.read` records in sequence order and hands each
//! to a [`Tally`]; the counting, the office hours and [`dutch_time`] are here, once. Nothing here
//! does I/O.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration as ChronoDuration, TimeZone, Timelike, Utc, Weekday};
use serde::Serialize;

use super::record::AccessRecord;

/// Dutch civil time (CET/CEST) for office-hours rules, without a time-zone database:
/// summer time runs from the last Sunday of March to the last Sunday of October, 01:00 UTC.
pub fn dutch_time(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    let last_sunday = |month: u32| -> DateTime<Utc> {
        let first_next = if month == 12 {
            Utc.with_ymd_and_hms(t.year() + 1, 1, 1, 1, 0, 0)
        } else {
            Utc.with_ymd_and_hms(t.year(), month + 1, 1, 1, 0, 0)
        }
        .single()
        .unwrap_or(t);
        let mut d = first_next - ChronoDuration::days(1);
        while d.weekday() != Weekday::Sun {
            d -= ChronoDuration::days(1);
        }
        d
    };
    let summer = t >= last_sunday(3) && t < last_sunday(10);
    (t + ChronoDuration::hours(if summer { 2 } else { 1 })).naive_utc()
}

/// The security officer's report over a period (Suwinet-style protocollering).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub dossier_reads: u64,
    /// Reads between 19:00 and 06:00 Dutch time.
    pub outside_office_hours: u64,
    pub at_weekends: u64,
    /// (masked BSN, reads), most-read first.
    pub most_viewed: Vec<(String, u64)>,
    /// (actor, organisation, reads).
    pub top_users: Vec<(String, String, u64)>,
    pub per_purpose: BTreeMap<String, u64>,
    pub per_view: BTreeMap<String, u64>,
    /// Role -> distinct users.
    pub users_per_role: BTreeMap<String, u64>,
    /// (time, actor, view, purpose) of each read outside office hours or at weekends.
    pub unusual: Vec<(String, String, String, String)>,
}

/// A report being counted: the period's `dossier.read` records go in one by one, in sequence
/// order; [`Tally::finish`] ranks them.
pub(super) struct Tally {
    rep: Report,
    subjects: BTreeMap<String, u64>,
    users: BTreeMap<(String, String), u64>,
    roles: BTreeMap<String, BTreeSet<String>>,
}

impl Tally {
    /// An empty report over `[from, to)`.
    pub(super) fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Tally {
        Tally {
            rep: Report {
                from: from.to_rfc3339(),
                to: to.to_rfc3339(),
                ..Report::default()
            },
            subjects: BTreeMap::new(),
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }

    /// Counts one dossier read.
    pub(super) fn add(&mut self, rec: AccessRecord) {
        let rep = &mut self.rep;
        rep.dossier_reads += 1;
        let local = dutch_time(rec.time);
        let weekend = matches!(local.weekday(), Weekday::Sat | Weekday::Sun);
        let off_hours = local.hour() >= 19 || local.hour() < 6;
        rep.outside_office_hours += u64::from(off_hours);
        rep.at_weekends += u64::from(weekend);
        if (off_hours || weekend) && rec.actor_type == "employee" {
            rep.unusual.push((
                local.format("%Y-%m-%d %H:%M").to_string(),
                rec.actor.clone(),
                rec.view.clone().unwrap_or_default(),
                rec.purpose.clone().unwrap_or_default(),
            ));
        }
        if let Some(b) = rec.bsn {
            *self.subjects.entry(b.masked()).or_default() += 1;
        }
        if rec.actor_type == "employee" {
            *self
                .users
                .entry((
                    rec.actor.clone(),
                    rec.actor_organisation.clone().unwrap_or_default(),
                ))
                .or_default() += 1;
            for r in &rec.actor_roles {
                self.roles
                    .entry(r.clone())
                    .or_default()
                    .insert(rec.actor.clone());
            }
        }
        *rep.per_purpose
            .entry(
                rec.purpose
                    .clone()
                    .unwrap_or_else(|| "(burger zelf)".into()),
            )
            .or_default() += 1;
        *rep.per_view
            .entry(rec.view.clone().unwrap_or_default())
            .or_default() += 1;
    }

    /// The report, with the `top` most-viewed subjects and most active users.
    pub(super) fn finish(self, top: usize) -> Report {
        let mut rep = self.rep;
        let mut s: Vec<(String, u64)> = self.subjects.into_iter().collect();
        s.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        s.truncate(top);
        rep.most_viewed = s;
        let mut u: Vec<(String, String, u64)> = self
            .users
            .into_iter()
            .map(|((a, o), n)| (a, o, n))
            .collect();
        u.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        u.truncate(top);
        rep.top_users = u;
        rep.users_per_role = self
            .roles
            .into_iter()
            .map(|(r, s)| (r, s.len() as u64))
            .collect();
        rep
    }
}

/// The security officer's report as `ketenportaal audit report` prints it (Dutch, for the
/// Functionaris Gegevensbescherming).
impl std::fmt::Display for Report {
    fn fmt(&self, o: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(
            o,
            "Protocollering ketenportaal, {} tot {}",
            r.from.get(..10).unwrap_or(&r.from),
            r.to.get(..10).unwrap_or(&r.to)
        )?;
        writeln!(o, "\nDossierraadplegingen:            {}", r.dossier_reads)?;
        writeln!(
            o,
            "  buiten kantoortijd (19-06 uur): {}",
            r.outside_office_hours
        )?;
        writeln!(o, "  in het weekend:                 {}", r.at_weekends)?;
        writeln!(o, "\nMeest geraadpleegde dossiers:")?;
        for (b, n) in &r.most_viewed {
            writeln!(o, "  {b:<12} {n:>6}")?;
        }
        writeln!(o, "\nGebruikers met de meeste raadplegingen:")?;
        for (u, org, n) in &r.top_users {
            writeln!(o, "  {u:<28} {org:<20} {n:>6}")?;
        }
        writeln!(o, "\nPer doel (doelbinding):")?;
        for (p, n) in &r.per_purpose {
            writeln!(o, "  {p:<28} {n:>6}")?;
        }
        writeln!(o, "\nPer view:")?;
        for (v, n) in &r.per_view {
            writeln!(o, "  {v:<28} {n:>6}")?;
        }
        writeln!(o, "\nGebruikers per rol:")?;
        for (role, n) in &r.users_per_role {
            writeln!(o, "  {role:<28} {n:>6}")?;
        }
        if !r.unusual.is_empty() {
            writeln!(
                o,
                "\nRaadplegingen door medewerkers buiten kantoortijd of in het weekend:"
            )?;
            for (t, u, v, p) in &r.unusual {
                writeln!(o, "  {t}  {u:<28} {v:<20} {p}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dutch_time_follows_summer_time() {
        let winter = Utc
            .with_ymd_and_hms(2026, 1, 15, 12, 0, 0)
            .single()
            .unwrap();
        assert_eq!(dutch_time(winter).hour(), 13);
        let summer = Utc
            .with_ymd_and_hms(2026, 7, 15, 12, 0, 0)
            .single()
            .unwrap();
        assert_eq!(dutch_time(summer).hour(), 14);
        // 2026-03-29 is the last Sunday of March: 00:59 UTC is winter, 01:00 UTC summer.
        let before = Utc
            .with_ymd_and_hms(2026, 3, 29, 0, 59, 0)
            .single()
            .unwrap();
        assert_eq!(dutch_time(before).hour(), 1);
        let after = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).single().unwrap();
        assert_eq!(dutch_time(after).hour(), 3);
    }
}
