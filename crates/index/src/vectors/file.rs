//! The vector file: the flat, memory-mapped copy of a collection's vectors
//! that the dense scan reads, derived from the store like the lexical index.
//!
//! `HOME/collections/NS/COLL/vectors/` holds one generation `G` of three
//! append-only files and a manifest:
//! - `rows.G`: the vectors, `dimension` little-endian f32 per row
//! - `docs.G`: one JSON line per written version of a document: its id, first
//!   row, chunk ordinals (one per row) and metadata (for filters)
//! - `tombstones.G`: little-endian u64 line numbers of `docs.G` whose
//!   document has since been replaced or removed
//! - `manifest.json`: the generation, the store sequence number the state
//!   contains, the model pin, and how much of each file belongs to the state
//!
//! The writer appends past the manifest's lengths, fsyncs, then replaces the
//! manifest (write, fsync, rename, fsync the directory). A reader only ever
//! takes the manifest's prefix of each file, so it sees the last state the
//! writer made durable, whatever the writer is doing now. Bytes past the
//! manifest, left by a crash mid-append, are cut off when a writer opens next.
//! When over half the rows are dead, a commit first copies the live rows into
//! generation `G + 1` and the manifest switches to it; old files are unlinked,
//! never rewritten, so a reader's map of them stays valid.

mod snapshot;

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use knowhow_core::Metadata;
use serde::{Deserialize, Serialize};

use crate::{io_error, store, Error, ModelPin};

pub(crate) use snapshot::VectorSnapshot;

#[cfg(target_endian = "big")]
compile_error!("the vector file is mapped as little-endian f32");

/// Version of the layout; a manifest of another version is rebuilt.
const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const MANIFEST_TMP: &str = "manifest.json.tmp";
const ROWS: &str = "rows";
const DOCS: &str = "docs";
const TOMBSTONES: &str = "tombstones";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    generation: u64,
    /// The store sequence number of the last change this state contains.
    seq: u64,
    pin: Option<ModelPin>,
    rows: u64,
    docs_bytes: u64,
    tombstones: u64,
}

/// One written version of a document: its rows are
/// `first_row..first_row + ordinals.len()`, row `first_row + i` holding the
/// vector of chunk `ordinals[i]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DocRecord {
    pub(crate) id: String,
    pub(crate) first_row: u64,
    pub(crate) ordinals: Vec<u32>,
    pub(crate) metadata: Metadata,
}

fn generation_file(dir: &Path, kind: &str, generation: u64) -> PathBuf {
    dir.join(format!("{kind}.{generation}"))
}

fn read_manifest(dir: &Path) -> Result<Option<Manifest>, Error> {
    let path = dir.join(MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", &path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("unreadable {}: {e}", path.display())))
}

/// The sequence number and model pin the vector file was last made durable
/// with; `None` when it has no readable manifest.
pub(crate) fn stamp(dir: &Path) -> Option<(u64, Option<ModelPin>)> {
    read_manifest(dir).ok().flatten().map(|m| (m.seq, m.pin))
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), Error> {
    let tmp = dir.join(MANIFEST_TMP);
    let mut file = File::create(&tmp).map_err(io_error("create", &tmp))?;
    file.write_all(&store::encode(manifest))
        .and_then(|()| file.sync_all())
        .map_err(io_error("write", &tmp))?;
    std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(io_error("rename", &tmp))?;
    sync_dir(dir)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync directory", dir))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), Error> {
    Ok(())
}

/// The first `len` bytes of a file; an error if it is shorter.
fn read_prefix(path: &Path, len: u64) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::with_capacity(len as usize);
    File::open(path)
        .and_then(|f| f.take(len).read_to_end(&mut bytes))
        .map_err(io_error("read", path))?;
    if (bytes.len() as u64) < len {
        return Err(Error::Corrupt(format!(
            "{} has {} bytes, its manifest says {len}",
            path.display(),
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn row_bytes(pin: Option<&ModelPin>) -> u64 {
    pin.map_or(0, |p| u64::from(p.dimension) * 4)
}

/// The document versions of a manifest's state, and which of them are dead.
fn read_records(dir: &Path, manifest: &Manifest) -> Result<(Vec<DocRecord>, HashSet<u64>), Error> {
    let docs_path = generation_file(dir, DOCS, manifest.generation);
    let docs = read_prefix(&docs_path, manifest.docs_bytes)?;
    let mut records = Vec::new();
    for line in docs.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let record: DocRecord = serde_json::from_slice(line)
            .map_err(|e| Error::Corrupt(format!("unreadable record in {}: {e}", docs_path.display())))?;
        if record.first_row + record.ordinals.len() as u64 > manifest.rows {
            return Err(Error::Corrupt(format!(
                "{} names rows past the {} of its manifest",
                docs_path.display(),
                manifest.rows
            )));
        }
        records.push(record);
    }
    let tombstones = read_prefix(
        &generation_file(dir, TOMBSTONES, manifest.generation),
        manifest.tombstones * 8,
    )?;
    let dead: HashSet<u64> = tombstones
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("chunks of 8 bytes")))
        .collect();
    if dead.iter().any(|&d| d >= records.len() as u64) {
        return Err(Error::Corrupt(format!(
            "a tombstone of {} names no record",
            docs_path.display()
        )));
    }
    let rows_path = generation_file(dir, ROWS, manifest.generation);
    let rows_len = std::fs::metadata(&rows_path)
        .map_err(io_error("read the size of", &rows_path))?
        .len();
    if rows_len < manifest.rows * row_bytes(manifest.pin.as_ref()) {
        return Err(Error::Corrupt(format!(
            "the vector rows of {} are shorter than its manifest says",
            dir.display()
        )));
    }
    Ok((records, dead))
}

/// The next unused generation number in `dir`, above `at_least`.
fn next_generation(dir: &Path, at_least: u64) -> Result<u64, Error> {
    let mut highest = at_least;
    for entry in std::fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        if let Some((_, generation)) = parse_generation_file(&entry.file_name().to_string_lossy()) {
            highest = highest.max(generation);
        }
    }
    Ok(highest + 1)
}

fn parse_generation_file(name: &str) -> Option<(&str, u64)> {
    let (kind, generation) = name.split_once('.')?;
    [ROWS, DOCS, TOMBSTONES]
        .contains(&kind)
        .then(|| generation.parse().ok().map(|g| (kind, g)))
        .flatten()
}

/// Unlinks the files of every generation but `keep` (left by a crash in a
/// rebuild or compaction, or replaced by one).
fn remove_other_generations(dir: &Path, keep: u64) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stray = match parse_generation_file(&name) {
            Some((_, generation)) => generation != keep,
            None => name == MANIFEST_TMP,
        };
        if stray {
            match std::fs::remove_file(entry.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error("remove", &entry.path())(e)),
                _ => {}
            }
        }
    }
    Ok(())
}

/// One file of a generation, appended to through a buffer.
struct Appender {
    path: PathBuf,
    file: BufWriter<File>,
}

impl Appender {
    fn new(path: PathBuf, file: File) -> Appender {
        Appender {
            path,
            file: BufWriter::new(file),
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.file.write_all(bytes).map_err(io_error("write", &self.path))
    }

    /// Hands the buffered bytes to the file.
    fn flush(&mut self) -> Result<(), Error> {
        self.file.flush().map_err(io_error("write", &self.path))
    }

    /// Flushes, then waits until the file's data is on disk.
    fn sync(&mut self) -> Result<(), Error> {
        self.flush()?;
        self.file.get_ref().sync_data().map_err(io_error("sync", &self.path))
    }
}

struct Files {
    rows: Appender,
    docs: Appender,
    tombstones: Appender,
}

impl Files {
    /// Empty files of a new generation.
    fn create(dir: &Path, generation: u64) -> Result<Files, Error> {
        let create = |kind| -> Result<Appender, Error> {
            let path = generation_file(dir, kind, generation);
            let file = File::create(&path).map_err(io_error("create", &path))?;
            Ok(Appender::new(path, file))
        };
        Ok(Files {
            rows: create(ROWS)?,
            docs: create(DOCS)?,
            tombstones: create(TOMBSTONES)?,
        })
    }

    /// The files of a committed generation, cut to the manifest's lengths and
    /// positioned for appending.
    fn reopen(dir: &Path, manifest: &Manifest) -> Result<Files, Error> {
        let open = |kind, len| -> Result<Appender, Error> {
            let path = generation_file(dir, kind, manifest.generation);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_error("open", &path))?;
            file.set_len(len).map_err(io_error("truncate", &path))?;
            Ok(Appender::new(path, file))
        };
        Ok(Files {
            rows: open(ROWS, manifest.rows * row_bytes(manifest.pin.as_ref()))?,
            docs: open(DOCS, manifest.docs_bytes)?,
            tombstones: open(TOMBSTONES, manifest.tombstones * 8)?,
        })
    }

    fn sync(&mut self) -> Result<(), Error> {
        for file in [&mut self.rows, &mut self.docs, &mut self.tombstones] {
            file.sync()?;
        }
        Ok(())
    }
}

/// A live document version, with its line number in the docs file.
struct Live {
    record: u64,
    doc: DocRecord,
}

/// Exclusive write access to a collection's vector file (held by
/// [`crate::Writer`]).
pub(crate) struct VectorWriter {
    dir: PathBuf,
    /// The manifest on disk: what readers see.
    committed: Option<Manifest>,
    generation: u64,
    pin: Option<ModelPin>,
    files: Files,
    rows: u64,
    docs_bytes: u64,
    tombstones: u64,
    records: u64,
    live: HashMap<String, Live>,
    dead_rows: u64,
    dirty: bool,
    /// Set while a write is under way: a failed one may have left part of a
    /// row behind, after which offsets no longer match the files.
    failed: bool,
}

impl VectorWriter {
    /// Opens the vector file in `dir`. A missing or unreadable one comes back
    /// empty and uncommitted, with [`VectorWriter::stamp`] `None`: the caller
    /// rebuilds it from the store.
    pub(crate) fn open(dir: &Path) -> Result<VectorWriter, Error> {
        std::fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        let committed = match read_manifest(dir) {
            Ok(Some(manifest)) if manifest.format == FORMAT => match Self::resume(dir, manifest) {
                Ok(writer) => return Ok(writer),
                Err(Error::Corrupt(_) | Error::Io { .. }) => None,
                Err(e) => return Err(e),
            },
            Ok(_) | Err(Error::Corrupt(_)) => None,
            Err(e) => return Err(e),
        };
        Self::fresh(dir, committed, None)
    }

    fn resume(dir: &Path, manifest: Manifest) -> Result<VectorWriter, Error> {
        let (records, dead) = read_records(dir, &manifest)?;
        let files = Files::reopen(dir, &manifest)?;
        remove_other_generations(dir, manifest.generation)?;
        let records_written = records.len() as u64;
        let mut live = HashMap::new();
        let mut dead_rows = 0;
        for (record, doc) in (0u64..).zip(records) {
            if dead.contains(&record) {
                dead_rows += doc.ordinals.len() as u64;
            } else if let Some(twice) = live.insert(doc.id.clone(), Live { record, doc }) {
                return Err(Error::Corrupt(format!(
                    "document {} is live twice in the vector file",
                    twice.doc.id
                )));
            }
        }
        Ok(VectorWriter {
            dir: dir.to_path_buf(),
            generation: manifest.generation,
            pin: manifest.pin.clone(),
            files,
            rows: manifest.rows,
            docs_bytes: manifest.docs_bytes,
            tombstones: manifest.tombstones,
            records: records_written,
            live,
            dead_rows,
            dirty: false,
            failed: false,
            committed: Some(manifest),
        })
    }

    /// An empty new generation; `committed` stays what readers see until the
    /// next commit.
    fn fresh(dir: &Path, committed: Option<Manifest>, pin: Option<ModelPin>) -> Result<VectorWriter, Error> {
        let generation = next_generation(dir, committed.as_ref().map_or(0, |m| m.generation))?;
        Ok(VectorWriter {
            dir: dir.to_path_buf(),
            files: Files::create(dir, generation)?,
            generation,
            pin,
            rows: 0,
            docs_bytes: 0,
            tombstones: 0,
            records: 0,
            live: HashMap::new(),
            dead_rows: 0,
            dirty: true,
            failed: false,
            committed,
        })
    }

    /// The sequence number and pin of the last commit, if any.
    pub(crate) fn stamp(&self) -> Option<(u64, Option<&ModelPin>)> {
        self.committed.as_ref().map(|m| (m.seq, m.pin.as_ref()))
    }

    /// Starts over, empty, for vectors of `pin` (a rebuild). Readers keep the
    /// last committed state until the next commit.
    pub(crate) fn reset(&mut self, pin: Option<ModelPin>) -> Result<(), Error> {
        *self = Self::fresh(&self.dir, self.committed.take(), pin)?;
        Ok(())
    }

    /// Runs a write, refusing any after one failed: then the files must be
    /// cut back to the manifest, which the next open does.
    fn guarded<T>(&mut self, write: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        if self.failed {
            return Err(Error::Corrupt(format!(
                "an earlier write to {} failed: open the collection again to repair it",
                self.dir.display()
            )));
        }
        self.failed = true;
        let out = write(self)?;
        self.failed = false;
        Ok(out)
    }

    /// Drops a document's rows, if it has any.
    pub(crate) fn remove(&mut self, id: &str) -> Result<(), Error> {
        self.guarded(|w| w.tombstone(id))
    }

    fn tombstone(&mut self, id: &str) -> Result<(), Error> {
        if let Some(gone) = self.live.remove(id) {
            self.files.tombstones.append(&gone.record.to_le_bytes())?;
            self.tombstones += 1;
            self.dead_rows += gone.doc.ordinals.len() as u64;
            self.dirty = true;
        }
        Ok(())
    }

    /// Writes a document's vectors (validated: one per ordinal, of the pinned
    /// dimension), replacing its previous ones.
    pub(crate) fn put(
        &mut self,
        id: &str,
        metadata: &Metadata,
        ordinals: Vec<u32>,
        vectors: &[Vec<f32>],
    ) -> Result<(), Error> {
        self.guarded(|w| w.append(id, metadata, ordinals, vectors))
    }

    fn append(&mut self, id: &str, metadata: &Metadata, ordinals: Vec<u32>, vectors: &[Vec<f32>]) -> Result<(), Error> {
        self.tombstone(id)?;
        for vector in vectors {
            self.files.rows.append(&store::encode_vector(vector))?;
        }
        let doc = DocRecord {
            id: id.to_string(),
            first_row: self.rows,
            ordinals,
            metadata: metadata.clone(),
        };
        self.docs_bytes += write_record(&mut self.files.docs, &doc)?;
        self.rows += vectors.len() as u64;
        self.live.insert(
            id.to_string(),
            Live {
                record: self.records,
                doc,
            },
        );
        self.records += 1;
        self.dirty = true;
        Ok(())
    }

    /// Makes everything written so far durable and visible to readers, stamped
    /// with the store's sequence number `seq`. Compacts first when over half
    /// the rows are dead.
    pub(crate) fn commit(&mut self, seq: u64) -> Result<(), Error> {
        self.guarded(|w| w.make_durable(seq))
    }

    fn make_durable(&mut self, seq: u64) -> Result<(), Error> {
        let same = self
            .committed
            .as_ref()
            .is_some_and(|m| m.seq == seq && m.generation == self.generation);
        if same && !self.dirty {
            return Ok(());
        }
        if self.dead_rows * 2 > self.rows {
            self.compact()?;
        }
        self.files.sync()?;
        let manifest = Manifest {
            format: FORMAT,
            generation: self.generation,
            seq,
            pin: self.pin.clone(),
            rows: self.rows,
            docs_bytes: self.docs_bytes,
            tombstones: self.tombstones,
        };
        write_manifest(&self.dir, &manifest)?;
        let switched = self.committed.as_ref().map(|m| m.generation) != Some(self.generation);
        self.committed = Some(manifest);
        self.dirty = false;
        if switched {
            remove_other_generations(&self.dir, self.generation)?;
        }
        Ok(())
    }

    /// Copies the live rows, in order, into a new generation.
    fn compact(&mut self) -> Result<(), Error> {
        self.files.rows.flush()?;
        let row_bytes = row_bytes(self.pin.as_ref()) as usize;
        let source_path = generation_file(&self.dir, ROWS, self.generation);
        let mut source = File::open(&source_path).map_err(io_error("open", &source_path))?;
        let generation = next_generation(&self.dir, self.generation)?;
        let mut files = Files::create(&self.dir, generation)?;
        let mut live: Vec<&mut Live> = self.live.values_mut().collect();
        live.sort_by_key(|l| l.doc.first_row);
        let (mut rows, mut docs_bytes) = (0u64, 0u64);
        let mut buffer = Vec::new();
        for (record, entry) in (0u64..).zip(live) {
            buffer.resize(entry.doc.ordinals.len() * row_bytes, 0);
            source
                .seek(SeekFrom::Start(entry.doc.first_row * row_bytes as u64))
                .and_then(|_| source.read_exact(&mut buffer))
                .map_err(io_error("read", &source_path))?;
            files.rows.append(&buffer)?;
            entry.doc.first_row = rows;
            entry.record = record;
            rows += entry.doc.ordinals.len() as u64;
            docs_bytes += write_record(&mut files.docs, &entry.doc)?;
        }
        self.files = files;
        self.generation = generation;
        self.rows = rows;
        self.docs_bytes = docs_bytes;
        self.tombstones = 0;
        self.records = self.live.len() as u64;
        self.dead_rows = 0;
        Ok(())
    }
}

fn write_record(out: &mut Appender, doc: &DocRecord) -> Result<u64, Error> {
    let mut line = store::encode(doc);
    line.push(b'\n');
    out.append(&line)?;
    Ok(line.len() as u64)
}
