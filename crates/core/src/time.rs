//! Calendar dates from Unix time, in UTC, without a date-time dependency, and the one place timestamps are
//! taken ([`unix_now`]) and formatted ([`UtcDateTime::rfc3339`], [`UtcDateTime::readable`]).

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) in the proleptic Gregorian calendar → days since 1970-01-01; the inverse of
/// [`civil_from_days`] (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A UTC date and time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcDateTime {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

/// Seconds since 1970-01-01 UTC now (0 on a clock set before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl UtcDateTime {
    /// The current UTC date and time, to the second.
    pub fn now() -> UtcDateTime {
        UtcDateTime::from_unix(unix_now())
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`: for files and APIs.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `YYYY-MM-DD HH:MM:SS`: for people, in a terminal.
    pub fn readable(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// The UTC date and time `seconds` after the Unix epoch.
    pub fn from_unix(seconds: u64) -> UtcDateTime {
        let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
        let time = seconds % 86_400;
        UtcDateTime {
            year,
            month,
            day,
            hour: time / 3600,
            minute: time % 3600 / 60,
            second: time % 60,
        }
    }

    /// The day of the week, Monday = 0 to Sunday = 6 (as Python's `weekday()`).
    pub fn weekday(&self) -> usize {
        // 1970-01-01 was a Thursday.
        (days_from_civil(self.year, self.month, self.day) + 3).rem_euclid(7) as usize
    }

    /// The day of the year, 1 for January 1st.
    pub fn day_of_year(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) - days_from_civil(self.year, 1, 1) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339_and_for_people() {
        let leap_day = UtcDateTime::from_unix(951_782_400);
        assert_eq!(leap_day.rfc3339(), "2000-02-29T00:00:00Z");
        assert_eq!(UtcDateTime::from_unix(1_795_301_999).readable(), "2026-11-21 22:59:59");
        assert_eq!(UtcDateTime::from_unix(0).readable(), "1970-01-01 00:00:00");
        assert!(unix_now() > 1_795_301_999);
    }

    #[test]
    fn unix_seconds_become_utc_calendar_dates() {
        let at = |s| {
            let t = UtcDateTime::from_unix(s);
            (t.year, t.month, t.day, t.hour, t.minute, t.second)
        };
        assert_eq!(at(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(at(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(at(1_795_301_999), (2026, 11, 21, 22, 59, 59));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn days_from_civil_inverts_civil_from_days() {
        for days in [-1000, 0, 59, 11_016, 20_000, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn weekdays_and_days_of_the_year() {
        let epoch = UtcDateTime::from_unix(0);
        assert_eq!(
            (epoch.weekday(), epoch.day_of_year()),
            (3, 1),
            "1970-01-01 was a Thursday"
        );
        // 2024-07-26, a Friday, day 208 of a leap year.
        let friday = UtcDateTime::from_unix(1_721_999_109);
        assert_eq!((friday.weekday(), friday.day_of_year()), (4, 208));
        let new_years_eve = UtcDateTime::from_unix(1_735_603_200);
        assert_eq!((new_years_eve.weekday(), new_years_eve.day_of_year()), (1, 366));
    }
}
