//! `strftime_now(format)`: the current UTC time formatted like Python's `strftime`; the calendar arithmetic is
//! `knowhow_core::time`'s.

use knowhow_core::time::UtcDateTime;
use minijinja::ErrorKind;

/// transformers' `strftime_now(format)`: the current time formatted like Python's `strftime`. The time is UTC
/// (transformers uses the machine's local time, which is UTC on most servers and containers).
pub(super) fn strftime_now(format: String) -> Result<String, minijinja::Error> {
    strftime(&format, knowhow_core::time::unix_now())
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats the UTC time `unix_seconds` with the `strftime` directives chat templates use: `%Y %y %m %B %b %d %e
/// %j %A %a %H %I %M %S %p %Z %z %%`, and glibc's `%-d`, `%-m`, `%-H`, `%-I`, `%-M`, `%-S`, `%-j` without padding.
pub(super) fn strftime(format: &str, unix_seconds: u64) -> Result<String, minijinja::Error> {
    let time = UtcDateTime::from_unix(unix_seconds);
    let (year, month, day) = (time.year, time.month, time.day);
    let (hour, minute, second) = (time.hour as i64, time.minute as i64, time.second as i64);
    let weekday = time.weekday();
    let day_of_year = time.day_of_year();
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut directive = chars.next();
        let unpadded = directive == Some('-');
        if unpadded {
            directive = chars.next();
        }
        let number = |value: i64, width: usize| {
            if unpadded {
                value.to_string()
            } else {
                format!("{value:0width$}")
            }
        };
        let text = match directive {
            Some('Y') => year.to_string(),
            Some('y') => number(year.rem_euclid(100), 2),
            Some('m') => number(month, 2),
            Some('B') => MONTHS[month as usize - 1].to_string(),
            Some('b') => MONTHS[month as usize - 1][..3].to_string(),
            Some('d') => number(day, 2),
            Some('e') => format!("{day:2}"),
            Some('j') => number(day_of_year, 3),
            Some('A') => WEEKDAYS[weekday].to_string(),
            Some('a') => WEEKDAYS[weekday][..3].to_string(),
            Some('H') => number(hour, 2),
            Some('I') => number(hour12, 2),
            Some('M') => number(minute, 2),
            Some('S') => number(second, 2),
            Some('p') => if hour < 12 { "AM" } else { "PM" }.to_string(),
            Some('Z') => "UTC".to_string(),
            Some('z') => "+0000".to_string(),
            Some('%') if !unpadded => "%".to_string(),
            other => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}{} in {format:?}",
                        if unpadded { "-" } else { "" },
                        other.map(String::from).unwrap_or_default()
                    ),
                ))
            }
        };
        out.push_str(&text);
    }
    Ok(out)
}
