//! API keys: who may call the server, in which namespaces, with which role and at what rate.
//!
//! A key is shown once, when it is created; the home keeps only its SHA-256 (`keys.json`), so a copy of the home
//! does not leak working keys. A key's first [`PREFIX_LEN`] characters are its public name: `keys list` shows them,
//! the audit log records them, and the server finds a presented key's record by them before comparing the whole
//! key's digest in constant time.
//!
//! `keys.json` is replaced atomically (written beside, then renamed) under an exclusive lock on `keys.lock`, so
//! two `knowhow keys` commands never lose each other's change and a server reading it never sees half a file.
//! A running server re-reads it when it changes: a revoked key stops working without a restart.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use knowhow_core::time::{days_from_civil, unix_now};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The characters of a key that name it publicly: `kh_` and 8 more.
pub const PREFIX_LEN: usize = 11;

/// What a key may do, each role including the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Search, ask, chat, embed, list and show.
    Read,
    /// Also upload and delete documents.
    Write,
    /// Also create and drop collections.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Write, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(name: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| format!("unknown role {name:?}: one of read, write, admin"))
    }
}

/// One key as the home stores it: everything but the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key's first [`PREFIX_LEN`] characters.
    pub prefix: String,
    /// Lowercase hex SHA-256 of the whole key.
    pub sha256: String,
    /// The namespaces it may read and write; never empty.
    pub namespaces: Vec<String>,
    pub role: Role,
    /// Requests per minute it may make (`None`: no limit).
    pub rpm: Option<u32>,
    /// Unix seconds from which it is refused.
    pub expires: Option<u64>,
    pub created: u64,
    /// Unix seconds at which it was revoked.
    pub revoked: Option<u64>,
}

impl KeyRecord {
    /// Whether the key may be used at `now`.
    pub fn active(&self, now: u64) -> bool {
        self.revoked.is_none() && self.expires.is_none_or(|expires| now < expires)
    }
}

/// What `keys create` asks for.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub namespaces: Vec<String>,
    pub role: Role,
    pub rpm: Option<u32>,
    pub expires: Option<u64>,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a key file knowhow wrote ({source}); move it away and create the keys again", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no key starts with {0:?}: `knowhow keys list` shows the prefixes")]
    NoSuchKey(String),
    #[error("{0:?} names several keys: give more of the key")]
    Ambiguous(String),
    #[error("a key needs at least one namespace (--namespace NS)")]
    NoNamespace,
    #[error("{0}")]
    InvalidNamespace(#[from] knowhow_core::Error),
    #[error("--rpm must be at least 1 (leave it out for no limit)")]
    ZeroRpm,
    #[error("the system has no random numbers to make a key from: {0}")]
    Random(String),
}

/// The `keys.json` of a home.
#[derive(Clone, Debug)]
pub struct KeyStore {
    path: PathBuf,
}

#[derive(Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<KeyRecord>,
}

impl KeyStore {
    /// The key file of the home at `root`.
    pub fn in_home(root: &Path) -> KeyStore {
        KeyStore {
            path: root.join("keys.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every key ever created, revoked and expired ones included, oldest first. No file: no keys.
    pub fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        Ok(self.read()?.keys)
    }

    /// Makes a key and stores its digest; returns the key, which is never shown again.
    pub fn create(&self, new: &NewKey) -> Result<(String, KeyRecord), KeyError> {
        if new.namespaces.is_empty() {
            return Err(KeyError::NoNamespace);
        }
        for namespace in &new.namespaces {
            knowhow_core::CollectionRef::new(namespace, "check")?;
        }
        if new.rpm == Some(0) {
            return Err(KeyError::ZeroRpm);
        }
        let mut random = [0u8; 20];
        getrandom::fill(&mut random).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = format!("kh_{}", hex(&random));
        let record = KeyRecord {
            prefix: key[..PREFIX_LEN].to_string(),
            sha256: hex(&Sha256::digest(key.as_bytes())),
            namespaces: new.namespaces.clone(),
            role: new.role,
            rpm: new.rpm,
            expires: new.expires,
            created: unix_now(),
            revoked: None,
        };
        self.update(|file| file.keys.push(record.clone()))?;
        Ok((key, record))
    }

    /// Revokes the one key whose prefix (or whole key) starts with `prefix`.
    pub fn revoke(&self, prefix: &str) -> Result<KeyRecord, KeyError> {
        let mut revoked = Err(KeyError::NoSuchKey(prefix.to_string()));
        self.update(|file| {
            let matching: Vec<&mut KeyRecord> = file
                .keys
                .iter_mut()
                .filter(|k| k.revoked.is_none() && (k.prefix.starts_with(prefix) || prefix.starts_with(&k.prefix)))
                .collect();
            match matching.len() {
                0 => {}
                1 => {
                    let record = matching.into_iter().next().expect("one");
                    record.revoked = Some(unix_now());
                    revoked = Ok(record.clone());
                }
                _ => revoked = Err(KeyError::Ambiguous(prefix.to_string())),
            }
        })?;
        revoked
    }

    fn read(&self) -> Result<KeyFile, KeyError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| KeyError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
            Err(source) => Err(self.io("read", &self.path, source)),
        }
    }

    /// Read, change, and atomically replace the file, holding `keys.lock` throughout.
    fn update(&self, change: impl FnOnce(&mut KeyFile)) -> Result<(), KeyError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io("create", dir, e))?;
        let lock_path = dir.join("keys.lock");
        let lock = std::fs::File::create(&lock_path).map_err(|e| self.io("create", &lock_path, e))?;
        fs4::fs_std::FileExt::lock_exclusive(&lock).map_err(|e| self.io("lock", &lock_path, e))?;
        let mut file = self.read()?;
        change(&mut file);
        let temporary = dir.join("keys.json.tmp");
        let bytes = serde_json::to_vec_pretty(&file).expect("key records serialize");
        let mut out = std::fs::File::create(&temporary).map_err(|e| self.io("create", &temporary, e))?;
        out.write_all(&bytes)
            .and_then(|()| out.sync_all())
            .map_err(|e| self.io("write", &temporary, e))?;
        std::fs::rename(&temporary, &self.path).map_err(|e| self.io("replace", &self.path, e))?;
        // The lock is released when `lock` drops, after the rename.
        drop(lock);
        Ok(())
    }

    fn io(&self, action: &'static str, path: &Path, source: std::io::Error) -> KeyError {
        KeyError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why a presented key is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Revoked,
    Expired,
}

/// Finds the record of `presented` among `keys`: the one whose digest equals the presented key's, compared in
/// constant time so that timing tells nothing about how much of a guess was right.
pub fn verify<'a>(keys: &'a [KeyRecord], presented: &str, now: u64) -> Result<&'a KeyRecord, Refusal> {
    let digest = hex(&Sha256::digest(presented.as_bytes()));
    let prefix = presented.get(..PREFIX_LEN).ok_or(Refusal::Unknown)?;
    let record = keys
        .iter()
        .filter(|k| k.prefix == prefix)
        .find(|k| bool::from(k.sha256.as_bytes().ct_eq(digest.as_bytes())))
        .ok_or(Refusal::Unknown)?;
    match (record.revoked, record.expires) {
        (Some(_), _) => Err(Refusal::Revoked),
        (None, Some(expires)) if now >= expires => Err(Refusal::Expired),
        _ => Ok(record),
    }
}

/// The unix second at which a key given `--expires DATE` (`YYYY-MM-DD`, UTC) stops working: the end of that day.
pub fn parse_expiry(date: &str) -> Result<u64, String> {
    let bad = || format!("--expires {date:?} is not a date: write YYYY-MM-DD (the key works through that day, UTC)");
    let parts: Vec<&str> = date.split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        return Err(bad());
    };
    let (Ok(year), Ok(month), Ok(day)) = (year.parse::<i64>(), month.parse::<i64>(), day.parse::<i64>()) else {
        return Err(bad());
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(1970..=9999).contains(&year) || !(1..=days_in_month).contains(&day) {
        return Err(bad());
    }
    Ok(((days_from_civil(year, month, day) + 1) * 86_400) as u64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key(namespace: &str, role: Role) -> NewKey {
        NewKey {
            namespaces: vec![namespace.into()],
            role,
            rpm: None,
            expires: None,
        }
    }

    #[test]
    fn a_key_is_stored_as_its_digest_and_verifies_until_revoked() {
        let home = tempfile::tempdir().unwrap();
        let store = KeyStore::in_home(home.path());
        let (key, record) = store.create(&new_key("team-a", Role::Write)).unwrap();
        assert!(key.starts_with("kh_") && key.len() == 43, "{key}");
        let file = std::fs::read_to_string(store.path()).unwrap();
        assert!(!file.contains(&key), "the key itself is never stored");
        assert!(file.contains(&record.sha256));

        let keys = store.list().unwrap();
        assert_eq!(verify(&keys, &key, unix_now()).unwrap().namespaces, ["team-a"]);
        let mut wrong = key.clone();
        wrong.replace_range(42.., if key.ends_with('0') { "1" } else { "0" });
        assert_eq!(verify(&keys, &wrong, unix_now()), Err(Refusal::Unknown));
        assert_eq!(verify(&keys, "kh_", unix_now()), Err(Refusal::Unknown));

        store.revoke(&record.prefix).unwrap();
        let keys = store.list().unwrap();
        assert_eq!(verify(&keys, &key, unix_now()), Err(Refusal::Revoked));
        assert!(matches!(store.revoke(&record.prefix), Err(KeyError::NoSuchKey(_))));
    }

    #[test]
    fn expiry_is_the_end_of_the_given_day() {
        let end = parse_expiry("2027-01-31").unwrap();
        assert_eq!(end, (days_from_civil(2027, 2, 1) * 86_400) as u64);
        let record = KeyRecord {
            expires: Some(end),
            ..sample()
        };
        assert!(record.active(end - 1));
        assert!(!record.active(end));
        assert_eq!(
            verify(std::slice::from_ref(&record), "kh_00000000x", end),
            Err(Refusal::Unknown)
        );
        for bad in ["2027-02-30", "2027-13-01", "tomorrow", "2027-1", "1969-12-31"] {
            assert!(parse_expiry(bad).unwrap_err().contains("YYYY-MM-DD"), "{bad}");
        }
        assert!(parse_expiry("2028-02-29").is_ok());
    }

    fn sample() -> KeyRecord {
        KeyRecord {
            prefix: "kh_00000000".into(),
            sha256: "0".repeat(64),
            namespaces: vec!["ns".into()],
            role: Role::Read,
            rpm: None,
            expires: None,
            created: 0,
            revoked: None,
        }
    }

    #[test]
    fn bad_requests_are_refused_before_anything_is_written() {
        let home = tempfile::tempdir().unwrap();
        let store = KeyStore::in_home(home.path());
        let mut no_namespace = new_key("x", Role::Read);
        no_namespace.namespaces.clear();
        assert!(matches!(store.create(&no_namespace), Err(KeyError::NoNamespace)));
        assert!(matches!(
            store.create(&new_key("../etc", Role::Read)),
            Err(KeyError::InvalidNamespace(_))
        ));
        let zero = NewKey {
            rpm: Some(0),
            ..new_key("x", Role::Read)
        };
        assert!(matches!(store.create(&zero), Err(KeyError::ZeroRpm)));
        assert!(!store.path().exists());
        std::fs::write(store.path(), "not json").unwrap();
        assert!(store.list().unwrap_err().to_string().contains("move it away"));
    }

    #[test]
    fn concurrent_creates_lose_no_key() {
        let home = tempfile::tempdir().unwrap();
        let store = KeyStore::in_home(home.path());
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| store.create(&new_key("ns", Role::Read)).unwrap());
            }
        });
        assert_eq!(store.list().unwrap().len(), 8);
    }
}
