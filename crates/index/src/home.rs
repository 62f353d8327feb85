//! [`Home`]: where collections live on disk, and the doors into them.

use std::path::{Path, PathBuf};

use knowhow_core::CollectionRef;

use crate::lexical::LexicalIndex;
use crate::vectors;
use crate::{io_error, store, Catalog, Error, Reader, Writer};

/// The directory that holds every namespace and collection.
///
/// A `Home` is only a path: making one touches nothing, and every method
/// looks at the disk afresh, so several `Home`s (in several processes) may
/// name the same directory. What they may do at once is settled per
/// collection by the store's file lock: one [`Writer`] at a time, and a
/// [`Catalog`] only while no writer holds the store; a [`Reader`] needs no
/// lock at all.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn collection_dir(&self, c: &CollectionRef) -> PathBuf {
        self.root.join("collections").join(&c.namespace).join(&c.collection)
    }

    /// Whether the collection exists: its store file has been created.
    ///
    /// A store file that is still empty does not count: a writer is creating
    /// it right now (or was killed doing so, and the next writer finishes the
    /// job), and redb refuses to open an empty file read-only.
    pub fn exists(&self, c: &CollectionRef) -> bool {
        std::fs::metadata(self.collection_dir(c).join("store.redb")).is_ok_and(|m| m.len() > 0)
    }

    /// Every collection, sorted by namespace then name.
    pub fn list(&self) -> Result<Vec<CollectionRef>, Error> {
        let mut out = Vec::new();
        let base = self.root.join("collections");
        let Ok(namespaces) = std::fs::read_dir(&base) else {
            return Ok(out);
        };
        for ns in namespaces {
            let ns = ns.map_err(io_error("list", &base))?;
            let ns_dir = ns.path();
            for coll in std::fs::read_dir(&ns_dir).map_err(io_error("list", &ns_dir))? {
                let coll = coll.map_err(io_error("list", &ns_dir))?;
                let (ns_name, coll_name) = (ns.file_name(), coll.file_name());
                if let Ok(c) = CollectionRef::new(&ns_name.to_string_lossy(), &coll_name.to_string_lossy()) {
                    if self.exists(&c) {
                        out.push(c);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Creates an empty collection; an error if it exists.
    pub fn create(&self, c: &CollectionRef) -> Result<(), Error> {
        if self.exists(c) {
            return Err(Error::CollectionExists(c.clone()));
        }
        self.open_writer(c, true)?.finish()
    }

    /// Deletes a collection and everything in it. Refused while a writer
    /// holds it.
    pub fn drop_collection(&self, c: &CollectionRef) -> Result<(), Error> {
        if !self.exists(c) {
            return Err(Error::NoSuchCollection(c.clone()));
        }
        let dir = self.collection_dir(c);
        let writer = self.open_writer(c, false)?;
        // Rename first, so a crash mid-delete leaves no half collection behind.
        let doomed = dir.with_file_name(format!(".dropping-{}-{}", c.collection, std::process::id()));
        std::fs::rename(&dir, &doomed).map_err(io_error("rename", &dir))?;
        drop(writer);
        std::fs::remove_dir_all(&doomed).map_err(io_error("remove", &doomed))?;
        Ok(())
    }

    /// Opens a collection for writing, bringing its lexical index and vector
    /// file up to date with the store first.
    pub fn open_writer(&self, c: &CollectionRef, create: bool) -> Result<Writer, Error> {
        if !create && !self.exists(c) {
            return Err(Error::NoSuchCollection(c.clone()));
        }
        let dir = self.collection_dir(c);
        std::fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        let path = dir.join("store.redb");
        let db = redb::Database::create(&path).map_err(|e| open_error(c, &path, e))?;
        Writer::open(c.clone(), db, &dir)
    }

    /// Opens a collection for searching. If no writer is active and the
    /// lexical index or the vector file lags the store (after a crash), it is
    /// caught up first.
    pub fn open_reader(&self, c: &CollectionRef) -> Result<Reader, Error> {
        if !self.exists(c) {
            return Err(Error::NoSuchCollection(c.clone()));
        }
        let dir = self.collection_dir(c);
        let lexical_dir = dir.join("lexical");
        let vectors_dir = dir.join("vectors");
        let behind = match self.open_read_only(c) {
            Ok(db) => {
                let indexed = LexicalIndex::open(&lexical_dir)
                    .ok()
                    .map(|l| l.committed_seq())
                    .transpose()?
                    .flatten();
                let last = store::last_seq(&db)?;
                let pin = store::model_pin(&db, store::PINNED)?;
                indexed != Some(last) || vectors::stamp(&vectors_dir) != Some((last, pin))
            }
            Err(Error::Busy(_)) => false,
            Err(e) => return Err(e),
        };
        if behind {
            match self.open_writer(c, false) {
                Ok(writer) => writer.finish()?,
                Err(Error::Busy(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Reader::open(c.clone(), &lexical_dir, vectors_dir)
    }

    /// Opens a collection's store read-only, for listing and showing
    /// documents. Refused while a writer holds it.
    pub fn open_catalog(&self, c: &CollectionRef) -> Result<Catalog, Error> {
        if !self.exists(c) {
            return Err(Error::NoSuchCollection(c.clone()));
        }
        let db = self.open_read_only(c)?;
        Ok(Catalog::new(db, self.collection_dir(c)))
    }

    /// Opens the store read-only. A store left unclean by a crash needs a
    /// repair only a writer can do: then a writer opens it once first.
    fn open_read_only(&self, c: &CollectionRef) -> Result<redb::ReadOnlyDatabase, Error> {
        let path = self.collection_dir(c).join("store.redb");
        match redb::ReadOnlyDatabase::open(&path) {
            Ok(db) => Ok(db),
            Err(redb::DatabaseError::RepairAborted) => {
                self.open_writer(c, false)?.finish()?;
                redb::ReadOnlyDatabase::open(&path).map_err(|e| open_error(c, &path, e))
            }
            Err(e) => Err(open_error(c, &path, e)),
        }
    }
}

/// Why the store file at `path` did not open: busy when another process
/// holds its lock, else an error naming the file.
fn open_error(c: &CollectionRef, path: &Path, error: redb::DatabaseError) -> Error {
    match error {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::Busy(c.clone()),
        redb::DatabaseError::Storage(redb::StorageError::Io(source)) => io_error("open", path)(source),
        other => Error::OpenStore {
            path: path.to_path_buf(),
            source: other.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collection() -> CollectionRef {
        CollectionRef::new("test", "errors").expect("valid name")
    }

    /// A home whose root is a file: the collection's directory cannot be
    /// made, and the error says which directory and what was being done.
    #[test]
    fn an_io_error_names_what_was_done_and_where() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("a-file");
        std::fs::write(&root, b"not a directory").expect("write");
        let home = Home::new(&root);
        let c = collection();

        let error = home.create(&c).expect_err("the root is a file");
        let wanted = home.collection_dir(&c);
        assert!(
            matches!(&error, Error::Io { action: "create directory", path, .. } if *path == wanted),
            "{error:?}"
        );
        assert!(error.to_string().contains(&wanted.display().to_string()), "{error}");
    }

    /// A store file redb cannot open (a directory here) is named in the
    /// error, after what failed.
    #[test]
    fn a_store_that_cannot_be_opened_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let home = Home::new(dir.path());
        let c = collection();
        let store = home.collection_dir(&c).join("store.redb");
        std::fs::create_dir_all(&store).expect("mkdir");

        let error = home.open_writer(&c, true).err().expect("the store is a directory");
        assert!(
            matches!(&error, Error::Io { action: "open", path, .. } if *path == store),
            "{error:?}"
        );
        let shown = error.to_string();
        assert!(
            shown.starts_with(&format!("cannot open {}: ", store.display())),
            "{shown}"
        );
    }
}
