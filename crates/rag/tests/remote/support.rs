//! What the remote clients' tests read from the requests that reached the test server
//! (`knowhow_testkit::http`).

use knowhow_testkit::http::Request;

/// The strings of a JSON array field of the body, e.g. `input` or `documents`.
pub fn strings(request: &Request, field: &str) -> Vec<String> {
    let json = request.json();
    let values = json[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} is not an array in {json}"));
    values
        .iter()
        .map(|v| v.as_str().expect("array of strings").to_string())
        .collect()
}
