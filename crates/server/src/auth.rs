//! Who is calling ([`Caller`]): the bearer key checked against the home's key file, its namespaces and role, and
//! its request rate.
//!
//! Keys are required when the key file lists any key, or when the server listens beyond loopback (then a key file
//! with no usable key refuses everyone rather than opening up). Without keys, on loopback, every caller is the
//! machine's own operator: every namespace, every role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use knowhow_core::CollectionRef;

use crate::keys::{self, KeyRecord, KeyStore, Refusal, Role};
use crate::{ApiError, AppState};

/// The namespace of a caller without keys who names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The authenticated caller of one request, put in the request's extensions by [`authenticate`].
#[derive(Clone, Debug)]
pub struct Caller {
    /// The key's public prefix (`None`: no keys are in use).
    pub prefix: Option<String>,
    /// `None`: every namespace (no keys in use).
    namespaces: Option<Vec<String>>,
    role: Role,
    /// The `?namespace=` of the request.
    asked: Option<String>,
}

impl Caller {
    /// The namespace this request works in: the one asked for (which the key must hold), else the key's only one.
    pub fn namespace(&self) -> Result<String, ApiError> {
        match (&self.namespaces, &self.asked) {
            (None, Some(asked)) => Ok(asked.clone()),
            (None, None) => Ok(DEFAULT_NAMESPACE.to_string()),
            (Some(held), Some(asked)) if held.contains(asked) => Ok(asked.clone()),
            // Another namespace's existence is not revealed: the same answer as for one that does not exist.
            (Some(_), Some(asked)) => Err(ApiError::not_found(format!("no namespace {asked:?} for this key"))),
            (Some(held), None) if held.len() == 1 => Ok(held[0].clone()),
            (Some(held), None) => Err(ApiError::invalid(
                "namespace",
                format!(
                    "this key holds several namespaces ({}): add ?namespace=NS",
                    held.join(", ")
                ),
            )),
        }
    }

    /// Whether this caller may see `namespace`'s things (a job, say), whichever namespace the request names.
    pub fn holds(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|held| held.iter().any(|n| n == namespace))
    }

    /// The collection `name` in this request's namespace. A name that cannot exist is a 404 like any other.
    pub fn collection(&self, name: &str) -> Result<CollectionRef, ApiError> {
        CollectionRef::new(&self.namespace()?, name).map_err(|_| ApiError::not_found(no_collection(name)))
    }

    /// Refuses (403) a caller whose role is below `role`; `action` says what was refused.
    pub fn require(&self, role: Role, action: &str) -> Result<(), ApiError> {
        if self.role >= role {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_role",
            format!(
                "{action} needs the {} role; this key has the {} role",
                role.name(),
                self.role.name()
            ),
        ))
    }
}

/// The 404 message for a collection the caller cannot see, whether or not it exists elsewhere.
pub fn no_collection(name: &str) -> String {
    format!("no collection {name:?} in this namespace: GET /v1/collections lists them")
}

/// The key file as last read, and the per-key request budgets.
pub(crate) struct Access {
    store: KeyStore,
    /// Listening beyond loopback: keys are required even when the file lists none.
    exposed: bool,
    loaded: Mutex<Loaded>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Loaded {
    keys: Arc<Vec<KeyRecord>>,
    /// The file's modification time and length when read, to notice a change cheaply.
    stamp: Option<(SystemTime, u64)>,
}

impl Access {
    pub(crate) fn new(store: KeyStore, exposed: bool) -> Result<Access, keys::KeyError> {
        let keys = store.list()?;
        Ok(Access {
            loaded: Mutex::new(Loaded {
                keys: Arc::new(keys),
                stamp: stamp(&store),
            }),
            store,
            exposed,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The keys, read again when the file changed since (a revoke takes effect on the next request). A file that
    /// has become unreadable keeps the last good keys; the error is the caller's to report.
    fn keys(&self) -> Result<Arc<Vec<KeyRecord>>, ApiError> {
        let now = stamp(&self.store);
        let mut loaded = self.loaded.lock().expect("no panic holds the key lock");
        if now != loaded.stamp {
            let keys = self
                .store
                .list()
                .map_err(|e| ApiError::internal(format!("cannot read the API keys: {e}")))?;
            *loaded = Loaded {
                keys: Arc::new(keys),
                stamp: now,
            };
        }
        Ok(loaded.keys.clone())
    }

    fn identify(&self, headers: &HeaderMap, asked: Option<String>) -> Result<Caller, ApiError> {
        let keys = self.keys()?;
        if keys.is_empty() && !self.exposed {
            return Ok(Caller {
                prefix: None,
                namespaces: None,
                role: Role::Admin,
                asked,
            });
        }
        let presented = bearer(headers)?;
        let record = keys::verify(&keys, presented, knowhow_core::time::unix_now()).map_err(|refusal| {
            unauthorized(match refusal {
                Refusal::Unknown => "the API key is not valid",
                Refusal::Revoked => "the API key has been revoked",
                Refusal::Expired => "the API key has expired",
            })
        })?;
        Ok(Caller {
            prefix: Some(record.prefix.clone()),
            namespaces: Some(record.namespaces.clone()),
            role: record.role,
            asked,
        })
    }

    /// Takes one request from the key's budget: `Ok(headers)` to add to the answer, or the 429 to send.
    fn take(&self, prefix: &str, rpm: u32) -> Result<Budget, Budget> {
        let mut buckets = self.buckets.lock().expect("no panic holds the bucket lock");
        let bucket = buckets.entry(prefix.to_string()).or_insert_with(|| Bucket::full(rpm));
        bucket.take(rpm, Instant::now())
    }
}

fn stamp(store: &KeyStore) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(store.path()).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("no API key: send the header `Authorization: Bearer KEY`"))?;
    // The scheme is case-insensitive (RFC 9110, section 11.1).
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
        .filter(|key| !key.is_empty())
        .ok_or_else(|| unauthorized("the Authorization header is not `Bearer KEY`"))
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
}

/// A token bucket: `rpm` requests of burst, refilled at `rpm` per minute.
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// What the rate limiter says about one request, as OpenAI's `x-ratelimit-*` headers.
pub(crate) struct Budget {
    limit: u32,
    remaining: u32,
    /// Until the bucket is full again.
    reset: Duration,
    /// Until one more request fits (a refused request's `retry-after`).
    retry: Duration,
}

impl Bucket {
    fn full(rpm: u32) -> Bucket {
        Bucket {
            tokens: f64::from(rpm),
            updated: Instant::now(),
        }
    }

    fn take(&mut self, rpm: u32, now: Instant) -> Result<Budget, Budget> {
        let capacity = f64::from(rpm);
        let per_second = capacity / 60.0;
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(capacity);
        self.updated = now;
        let allowed = self.tokens >= 1.0;
        if allowed {
            self.tokens -= 1.0;
        }
        let budget = Budget {
            limit: rpm,
            remaining: self.tokens.floor() as u32,
            reset: Duration::from_secs_f64((capacity - self.tokens) / per_second),
            retry: Duration::from_secs_f64((1.0 - self.tokens).max(0.0) / per_second),
        };
        if allowed {
            Ok(budget)
        } else {
            Err(budget)
        }
    }
}

impl Budget {
    fn write(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit-requests", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining-requests", HeaderValue::from(self.remaining));
        let reset = format!("{:.3}s", self.reset.as_secs_f64());
        headers.insert(
            "x-ratelimit-reset-requests",
            HeaderValue::from_str(&reset).expect("ascii"),
        );
    }

    fn refusal(&self) -> Response {
        let seconds = self.retry.as_secs_f64();
        let mut response = ApiError {
            retry_after: Some(seconds.ceil().max(1.0) as u64),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                format!(
                    "this key may make {} requests per minute; retry in {seconds:.1} s",
                    self.limit
                ),
            )
        }
        .into_response();
        // The official SDKs prefer the millisecond form when it is there.
        let millis = (seconds * 1000.0).ceil() as u64;
        response
            .headers_mut()
            .insert("retry-after-ms", HeaderValue::from(millis));
        self.write(response.headers_mut());
        response
    }
}

/// Middleware: identifies the caller, spends one request of its key's budget, and hands the request on with the
/// [`Caller`] in its extensions.
pub(crate) async fn authenticate(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let asked = request.uri().query().and_then(namespace_parameter);
    let caller = match state.access.identify(request.headers(), asked) {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    let rpm = caller.prefix.as_deref().and_then(|prefix| {
        let keys = state.access.keys().ok()?;
        let rpm = keys.iter().find(|k| k.prefix == prefix)?.rpm?;
        Some((prefix.to_string(), rpm))
    });
    let budget = match rpm {
        None => None,
        Some((prefix, rpm)) => match state.access.take(&prefix, rpm) {
            Ok(budget) => Some(budget),
            Err(refused) => return refused.refusal(),
        },
    };
    request.extensions_mut().insert(caller.clone());
    let mut response = next.run(request).await;
    if let Some(budget) = budget {
        budget.write(response.headers_mut());
    }
    // For the request log, which runs outside this middleware.
    response.extensions_mut().insert(caller);
    response
}

/// The `namespace` of a query string, percent- and `+`-decoded as a browser's form encodes it.
fn namespace_parameter(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "namespace")
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_until_it_refills() {
        let start = Instant::now();
        let mut bucket = Bucket {
            tokens: 2.0,
            updated: start,
        };
        assert_eq!(bucket.take(2, start).map(|b| b.remaining).ok(), Some(1));
        assert_eq!(bucket.take(2, start).map(|b| b.remaining).ok(), Some(0));
        let refused = bucket.take(2, start).err().expect("the third request is refused");
        // Two per minute: one more fits after 30 s.
        assert!((refused.retry.as_secs_f64() - 30.0).abs() < 1e-6);
        assert!((refused.reset.as_secs_f64() - 60.0).abs() < 1e-6);
        assert!(bucket.take(2, start + Duration::from_secs(29)).is_err());
        assert!(bucket.take(2, start + Duration::from_secs(31)).is_ok());
    }

    fn caller(namespaces: Option<&[&str]>, role: Role, asked: Option<&str>) -> Caller {
        Caller {
            prefix: None,
            namespaces: namespaces.map(|n| n.iter().map(|s| s.to_string()).collect()),
            role,
            asked: asked.map(String::from),
        }
    }

    #[test]
    fn a_key_works_in_its_namespaces_only_and_another_is_not_found() {
        assert_eq!(caller(Some(&["a"]), Role::Read, None).namespace().unwrap(), "a");
        assert_eq!(
            caller(Some(&["a", "b"]), Role::Read, Some("b")).namespace().unwrap(),
            "b"
        );
        let other = caller(Some(&["a"]), Role::Read, Some("b")).namespace().unwrap_err();
        assert_eq!(other.status, StatusCode::NOT_FOUND);
        let several = caller(Some(&["a", "b"]), Role::Read, None).namespace().unwrap_err();
        assert_eq!(several.param, Some("namespace"));
        assert_eq!(caller(None, Role::Admin, None).namespace().unwrap(), DEFAULT_NAMESPACE);
        let bad_name = caller(None, Role::Admin, None).collection("../x").unwrap_err();
        assert_eq!(bad_name.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn roles_include_the_ones_below() {
        let write = caller(Some(&["a"]), Role::Write, None);
        assert!(write.require(Role::Read, "search").is_ok());
        assert!(write.require(Role::Write, "upload").is_ok());
        let refused = write.require(Role::Admin, "dropping a collection").unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.message.contains("needs the admin role"), "{}", refused.message);
    }

    #[test]
    fn the_namespace_parameter_is_found_among_others() {
        assert_eq!(namespace_parameter("k=3&namespace=team-b").as_deref(), Some("team-b"));
        assert_eq!(namespace_parameter("k=3"), None);
        assert_eq!(namespace_parameter("namespace=team%2Db").as_deref(), Some("team-b"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_needs_a_key() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert_eq!(bearer(&headers("Bearer kh_1")).unwrap(), "kh_1");
        assert_eq!(bearer(&headers("bearer  kh_1 ")).unwrap(), "kh_1");
        for bad in ["Basic kh_1", "Bearer ", "kh_1"] {
            assert_eq!(
                bearer(&headers(bad)).unwrap_err().status,
                StatusCode::UNAUTHORIZED,
                "{bad}"
            );
        }
        assert_eq!(bearer(&HeaderMap::new()).unwrap_err().status, StatusCode::UNAUTHORIZED);
    }
}
