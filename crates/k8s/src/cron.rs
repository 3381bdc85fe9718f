//! Cron schedules as a CronJob's `spec.schedule` reads them (upstream parses them with
//! robfig/cron's `ParseStandard`): five fields (minute, hour, day of month, month, day of
//! week) with lists, ranges, steps, `*` and `?`, month and weekday names, and the macros
//! `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly`.
//! Start times are computed in a time zone from the host's tz database
//! (`/usr/share/zoneinfo`), and [`missed_schedules`] finds the start times missed since a
//! point in time, as the CronJob controller's `mostRecentScheduleTime`.
//!
//! # Example
//!
//! ```
//! use kcore_k8s::{time_zone, CronSchedule};
//!
//! let s = CronSchedule::parse("*/15 9-17 * * MON-FRI")?;
//! let utc = time_zone(None)?;
//! let t: k8s_openapi::jiff::Timestamp = "2026-03-06T17:50:00Z".parse()?; // a Friday
//! let next = s.next_after(t, &utc).expect("a next time");
//! assert_eq!(next.to_string(), "2026-03-09T09:00:00Z"); // Monday
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan as _};

use crate::error::Error;

/// A parsed cron schedule: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// The day-of-month field was `*` or `?` (then days must match both fields).
    dom_star: bool,
    /// The day-of-week field was `*` or `?`.
    dow_star: bool,
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

fn fail(schedule: &str, reason: impl Into<String>) -> Error {
    Error::Cron {
        schedule: schedule.to_owned(),
        reason: reason.into(),
    }
}

fn number(s: &str, b: &Bounds) -> Result<u32, String> {
    if let Some(i) = b.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(b.min + u32::try_from(i).unwrap_or(0));
    }
    if let Some(rest) = s.strip_prefix('-') {
        if rest.parse::<u32>().is_ok() {
            return Err(format!("negative number ({s}) not allowed: {s}"));
        }
    }
    s.parse::<u32>()
        .map_err(|e| format!("failed to parse int from {s}: {e}"))
}

/// One comma-separated part of a field: `*`, `?`, `n`, `a-b`, each with an optional `/step`.
/// Returns the bits and whether it was an unrestricted star.
fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let mut parts = expr.split('/');
    let body = parts.next().unwrap_or_default();
    let step_s = parts.next();
    if parts.next().is_some() {
        return Err(format!("too many slashes: {expr}"));
    }
    let mut star = false;
    let (start, mut end, single) = if body == "*" || body == "?" {
        star = true;
        (b.min, b.max, false)
    } else {
        let mut lh = body.split('-');
        let lo = number(lh.next().unwrap_or_default(), b)?;
        match (lh.next(), lh.next()) {
            (None, _) => (lo, lo, true),
            (Some(hi), None) => (lo, number(hi, b)?, false),
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    let step = match step_s {
        None => 1,
        Some(s) => {
            let n = s
                .parse::<u32>()
                .map_err(|e| format!("failed to parse int from {s}: {e}"))?;
            if n == 0 {
                return Err(format!("step of range should be a positive number: {expr}"));
            }
            if single {
                end = b.max;
            }
            if n > 1 {
                star = false;
            }
            n
        }
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v += step;
    }
    Ok((bits, star))
}

fn field(f: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let mut bits = 0;
    let mut star = false;
    for part in f.split(',') {
        let (b2, s) = range(part, b)?;
        bits |= b2;
        star |= s;
    }
    Ok((bits, star))
}

impl CronSchedule {
    /// Parses a standard five-field schedule or a macro. `TZ=`/`CRON_TZ=` prefixes are
    /// refused (a CronJob names its zone in `spec.timeZone`), as is `@every`, which
    /// upstream's CronJob documentation does not offer.
    pub fn parse(schedule: &str) -> Result<Self, Error> {
        let s = schedule.trim();
        if s.is_empty() {
            return Err(fail(schedule, "empty spec string"));
        }
        if s.starts_with("TZ=") || s.starts_with("CRON_TZ=") {
            return Err(fail(
                schedule,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
        let expanded = if s.starts_with('@') {
            match s {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                _ => return Err(fail(schedule, format!("unrecognized descriptor: {s}"))),
            }
        } else {
            s
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(fail(
                schedule,
                format!(
                    "expected exactly 5 fields, found {}: [{}]",
                    fields.len(),
                    fields.join(" ")
                ),
            ));
        }
        let err = |e: String| fail(schedule, e);
        let (minute, _) = field(fields[0], &MINUTE).map_err(err)?;
        let (hour, _) = field(fields[1], &HOUR).map_err(err)?;
        let (dom, dom_star) = field(fields[2], &DOM).map_err(err)?;
        let (month, _) = field(fields[3], &MONTH).map_err(err)?;
        let (dow, dow_star) = field(fields[4], &DOW).map_err(err)?;
        Ok(Self {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        })
    }

    fn day_matches(&self, dt: DateTime) -> bool {
        let d = 1u64 << dt.day();
        let w = 1u64 << dt.weekday().to_sunday_zero_offset();
        let (dm, wm) = (self.dom & d != 0, self.dow & w != 0);
        if self.dom_star || self.dow_star {
            dm && wm
        } else {
            dm || wm
        }
    }

    /// The first start time strictly after `t`, reading the fields in zone `tz`; `None`
    /// when there is none within five years (`0 0 30 2 *`).
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = t.to_zoned(tz.clone()).datetime();
        let mut dt = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = local.year() + 5;
        while dt.year() <= limit {
            if self.month & (1 << dt.month()) == 0 {
                dt = dt
                    .date()
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .into();
                continue;
            }
            if !self.day_matches(dt) {
                dt = dt.date().tomorrow().ok()?.into();
                continue;
            }
            if self.hour & (1 << dt.hour()) == 0 {
                dt = dt
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minute & (1 << dt.minute()) == 0 {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            let at = dt.to_zoned(tz.clone()).ok()?.timestamp();
            if at > t {
                return Some(at);
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }

    /// The last start time at or before `now` and after `earliest`, if any.
    fn last_at_or_before(
        &self,
        tz: &TimeZone,
        earliest: Timestamp,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let mut window = jiff::SignedDuration::from_mins(2);
        loop {
            let from = now.checked_sub(window).unwrap_or(earliest).max(earliest);
            let mut last = None;
            let mut t = from;
            while let Some(n) = self.next_after(t, tz).filter(|n| *n <= now) {
                last = Some(n);
                t = n;
            }
            if last.is_some() || from == earliest {
                return last;
            }
            window = window.checked_mul(4)?;
        }
    }
}

/// What [`missed_schedules`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// The most recent start time at or before `now`, if one passed.
    pub most_recent: Option<Timestamp>,
    /// How many start times passed (upstream's estimate from the interval between two
    /// start times, which it uses only to warn past 100).
    pub count: i64,
}

/// The start times of `schedule` (in `tz`) after `earliest` and at or before `now`, as
/// upstream's `mostRecentScheduleTime`: none, one, or many, with the most recent one. A
/// schedule with less than a second between two start times is an error, as upstream.
pub fn missed_schedules(
    schedule: &CronSchedule,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> Result<Missed, Error> {
    let none = Missed {
        most_recent: None,
        count: 0,
    };
    let Some(t1) = schedule.next_after(earliest, tz) else {
        return Ok(none);
    };
    if now < t1 {
        return Ok(none);
    }
    let Some(t2) = schedule.next_after(t1, tz) else {
        return Ok(Missed {
            most_recent: Some(t1),
            count: 1,
        });
    };
    if now < t2 {
        return Ok(Missed {
            most_recent: Some(t1),
            count: 1,
        });
    }
    let between = t2.as_second() - t1.as_second();
    if between < 1 {
        return Err(Error::Cron {
            schedule: String::new(),
            reason: "time difference between two schedules is less than 1 second".into(),
        });
    }
    let count = (now.as_second() - t1.as_second()) / between + 1;
    let most_recent = schedule.last_at_or_before(tz, t1, now).or(Some(t1));
    Ok(Missed { most_recent, count })
}

/// The zone a CronJob's `spec.timeZone` names, from the host's tz database; `None` is
/// UTC (the zone kcore's controllers run in).
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, Error> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(n) if n.is_empty() || n.contains(' ') || n.starts_with('/') || n.contains("..") => {
            Err(Error::TimeZone { name: n.to_owned() })
        }
        Some(n) => TimeZone::get(n).map_err(|_| Error::TimeZone { name: n.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn next_times_table() {
        let utc = TimeZone::UTC;
        for (sched, from, want) in [
            ("* * * * *", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"),
            ("* * * * *", "2026-01-01T00:00:30Z", "2026-01-01T00:01:00Z"),
            (
                "*/5 * * * *",
                "2026-01-01T00:01:00Z",
                "2026-01-01T00:05:00Z",
            ),
            ("0 * * * *", "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"),
            ("@hourly", "2026-01-01T10:59:59Z", "2026-01-01T11:00:00Z"),
            ("@daily", "2026-01-01T10:00:00Z", "2026-01-02T00:00:00Z"),
            ("@midnight", "2026-01-01T10:00:00Z", "2026-01-02T00:00:00Z"),
            ("@weekly", "2026-01-01T10:00:00Z", "2026-01-04T00:00:00Z"),
            ("@monthly", "2026-01-15T10:00:00Z", "2026-02-01T00:00:00Z"),
            ("@yearly", "2026-01-15T10:00:00Z", "2027-01-01T00:00:00Z"),
            ("@annually", "2026-01-15T10:00:00Z", "2027-01-01T00:00:00Z"),
            ("30 2 * * *", "2026-01-01T02:30:00Z", "2026-01-02T02:30:00Z"),
            ("0 0 29 2 *", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            (
                "0 9 * * mon-fri",
                "2026-03-06T10:00:00Z",
                "2026-03-09T09:00:00Z",
            ),
            (
                "0 9 * jan,JUL *",
                "2026-02-01T00:00:00Z",
                "2026-07-01T09:00:00Z",
            ),
            // Both day fields restricted: either matches.
            ("0 0 13 * 5", "2026-03-01T00:00:00Z", "2026-03-06T00:00:00Z"),
            ("0 0 1 * 6", "2026-03-08T00:00:00Z", "2026-03-14T00:00:00Z"),
            // One of them a star: both must match.
            ("0 0 13 * *", "2026-03-01T00:00:00Z", "2026-03-13T00:00:00Z"),
            ("0 0 ? * 5", "2026-03-01T00:00:00Z", "2026-03-06T00:00:00Z"),
            (
                "5/20 * * * *",
                "2026-01-01T00:06:00Z",
                "2026-01-01T00:25:00Z",
            ),
            (
                "1-10/3 * * * *",
                "2026-01-01T00:05:00Z",
                "2026-01-01T00:07:00Z",
            ),
            (
                "59 23 31 12 *",
                "2026-01-01T00:00:00Z",
                "2026-12-31T23:59:00Z",
            ),
        ] {
            let s = CronSchedule::parse(sched).unwrap();
            assert_eq!(
                s.next_after(ts(from), &utc).map(|t| t.to_string()),
                Some(want.to_owned()),
                "{sched} after {from}"
            );
        }
        let never = CronSchedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(never.next_after(ts("2026-01-01T00:00:00Z"), &utc), None);
    }

    #[test]
    fn time_zones_and_dst() {
        let ny = time_zone(Some("America/New_York")).unwrap();
        let s = CronSchedule::parse("0 9 * * *").unwrap();
        // 09:00 EST is 14:00Z; after the March change, 09:00 EDT is 13:00Z.
        assert_eq!(
            s.next_after(ts("2026-03-01T00:00:00Z"), &ny)
                .unwrap()
                .to_string(),
            "2026-03-01T14:00:00Z"
        );
        assert_eq!(
            s.next_after(ts("2026-03-10T00:00:00Z"), &ny)
                .unwrap()
                .to_string(),
            "2026-03-10T13:00:00Z"
        );
        // 02:30 does not exist on 2026-03-08 in New York: the run moves an hour on.
        let gap = CronSchedule::parse("30 2 * * *").unwrap();
        assert_eq!(
            gap.next_after(ts("2026-03-08T05:00:00Z"), &ny)
                .unwrap()
                .to_string(),
            "2026-03-08T07:30:00Z"
        );
        assert!(matches!(
            time_zone(Some("Mars/Olympus")),
            Err(Error::TimeZone { .. })
        ));
        assert!(time_zone(Some("../etc/passwd")).is_err());
        assert_eq!(
            time_zone(Some("Mars/Olympus")).unwrap_err().to_string(),
            "unknown time zone Mars/Olympus"
        );
    }

    #[test]
    fn parse_errors_table() {
        for (sched, reason) in [
            ("", "empty spec string"),
            ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
            (
                "* * * * * *",
                "expected exactly 5 fields, found 6: [* * * * * *]",
            ),
            ("@every 1h", "unrecognized descriptor: @every 1h"),
            ("@often", "unrecognized descriptor: @often"),
            ("60 * * * *", "end of range (60) above maximum (59): 60"),
            ("* 0-24 * * *", "end of range (24) above maximum (23): 0-24"),
            ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
            (
                "5-1 * * * *",
                "beginning of range (5) beyond end of range (1): 5-1",
            ),
            (
                "*/0 * * * *",
                "step of range should be a positive number: */0",
            ),
            ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
            ("*/2/3 * * * *", "too many slashes: */2/3"),
            (
                "x * * * *",
                "failed to parse int from x: invalid digit found in string",
            ),
            ("* * * * 7", "end of range (7) above maximum (6): 7"),
            (
                "TZ=UTC * * * * *",
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ),
        ] {
            match CronSchedule::parse(sched) {
                Err(Error::Cron { reason: r, .. }) => assert_eq!(r, reason, "{sched:?}"),
                other => panic!("{sched:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn missed_schedules_table() {
        let utc = TimeZone::UTC;
        let every_min = CronSchedule::parse("* * * * *").unwrap();
        let hourly = CronSchedule::parse("0 * * * *").unwrap();
        let weekdays = CronSchedule::parse("0 9 * * 1-5").unwrap();
        for (s, earliest, now, most_recent, count) in [
            (
                &every_min,
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:59Z",
                None,
                0,
            ),
            (
                &every_min,
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:01:00Z",
                Some("2026-01-01T00:01:00Z"),
                1,
            ),
            (
                &every_min,
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:03:30Z",
                Some("2026-01-01T00:03:00Z"),
                3,
            ),
            // Downtime of a day: 1440 misses, one (the latest) to run.
            (
                &every_min,
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:10Z",
                Some("2026-01-02T00:00:00Z"),
                1440,
            ),
            (
                &hourly,
                "2026-01-01T00:00:00Z",
                "2026-01-01T05:59:00Z",
                Some("2026-01-01T05:00:00Z"),
                5,
            ),
            // Irregular intervals: the most recent is exact (Friday, not Sunday).
            (
                &weekdays,
                "2026-03-01T00:00:00Z",
                "2026-03-08T12:00:00Z",
                Some("2026-03-06T09:00:00Z"),
                7,
            ),
        ] {
            let m = missed_schedules(s, &utc, ts(earliest), ts(now)).unwrap();
            assert_eq!(
                m.most_recent.map(|t| t.to_string()),
                most_recent.map(str::to_owned),
                "{s:?} {earliest}..{now}"
            );
            assert_eq!(m.count, count, "{s:?} {earliest}..{now}");
        }
    }
}
