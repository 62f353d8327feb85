//! Shared by the test targets: finding optional resources named by environment variables.

/// The value of `var`, or `None` after printing why the test is skipped. With `KNOWHOW_REQUIRE_REAL_MODELS=1` (as in
/// CI) a missing variable fails the test instead.
pub fn required_env(var: &str, test: &str, example: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("KNOWHOW_REQUIRE_REAL_MODELS").as_deref() == Ok("1") => {
            panic!("{test}: {var} is not set and KNOWHOW_REQUIRE_REAL_MODELS=1 (set {var}={example})")
        }
        _ => {
            eprintln!("skipped {test}: set {var}={example} to run it");
            None
        }
    }
}
