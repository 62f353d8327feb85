//! Shared by the test targets: finding optional resources named by environment variables (`knowhow_testkit::env`).

pub use knowhow_testkit::env::required_env;
