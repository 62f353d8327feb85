//! Ingest jobs: uploaded files into a collection, one job at a time, each file's state visible while it runs and
//! the whole job durable, so that one cut short by a stop or a crash resumes on the next start.
//!
//! ```text
//! upload ─▶ files written (temp + rename) ─▶ job file written ─▶ 202 {id}
//!        ─▶ ingest thread: queued → running ─▶ per file: queued → parsing → embedding → indexed | unchanged | failed
//! ```
//!
//! The job file (`jobs/ID.json` in the home) is written before the upload is acknowledged and after every change
//! of state. On start, every job not finished is queued again: the ingest pipeline skips the files whose commit
//! already happened (they come back `unchanged`), so a resumed job redoes only what was lost.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

use knowhow_core::time::UtcDateTime;
use knowhow_core::CollectionRef;
use knowhow_index::Home;
use knowhow_rag::pipeline::{ingest, Event, FileStatus, IngestOptions};
use knowhow_rag::LoadedEmbedder;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    /// Every file was ingested, or failed alone: see each file's state.
    Done,
    /// The job as a whole could not run (the collection was dropped, its model differs, ...).
    Failed,
}

/// Where one file of a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    Queued,
    /// Being read, parsed and chunked.
    Parsing,
    Embedding,
    Indexed,
    Unchanged,
    Failed,
}

impl FileState {
    fn finished(self) -> bool {
        matches!(self, FileState::Indexed | FileState::Unchanged | FileState::Failed)
    }

    /// The name the API and `/metrics` use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FileState::Queued => "queued",
            FileState::Parsing => "parsing",
            FileState::Embedding => "embedding",
            FileState::Indexed => "indexed",
            FileState::Unchanged => "unchanged",
            FileState::Failed => "failed",
        }
    }
}

/// Uploaded files and their documents ingested since the server started, by how they ended (`/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IngestCounts {
    /// Finished files by final state: indexed, unchanged, failed.
    pub files: std::collections::BTreeMap<&'static str, u64>,
    /// Documents of those files by what the store did: added, updated, unchanged, removed.
    pub documents: std::collections::BTreeMap<&'static str, u64>,
}

/// One uploaded file of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobFile {
    /// The name the client gave.
    pub name: String,
    /// The name it is stored under (see [`stored_name`]).
    pub stored: String,
    pub state: FileState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Rows or documents of the file that failed while the rest went in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// An ingest job as the API shows it and the home keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub object: String,
    pub namespace: String,
    pub collection: String,
    pub state: JobState,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub files: Vec<JobFile>,
}

impl Job {
    pub fn collection_ref(&self) -> Option<CollectionRef> {
        CollectionRef::new(&self.namespace, &self.collection).ok()
    }
}

/// The name an uploaded file is stored under, or why it is refused: only its last path component is kept (so
/// `../` and absolute paths cannot leave the upload folder), characters outside `[A-Za-z0-9._ -]` become `_`,
/// leading dots are dropped (a hidden file would be skipped by the walk), and at most 200 bytes are kept, with the
/// extension, which picks the loader.
pub fn stored_name(name: &str) -> Result<String, String> {
    if name.contains('\0') {
        return Err(format!("the file name {name:?} contains a NUL byte"));
    }
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_string();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '_') {
        return Err(format!("the file name {name:?} has no usable name in it"));
    }
    if cleaned.len() <= 200 {
        return Ok(cleaned);
    }
    let (stem, extension) = cleaned.rsplit_once('.').unwrap_or((&cleaned, ""));
    let keep = 200usize.saturating_sub(extension.len() + 1).min(stem.len());
    Ok(format!("{}.{extension}", &stem[..keep]))
}

/// The job queue and every job's live state.
pub(crate) struct Jobs {
    dir: PathBuf,
    uploads: PathBuf,
    queue: Mutex<Sender<String>>,
    live: Mutex<HashMap<String, watch::Sender<Job>>>,
    /// Jobs a stop or a crash left unfinished, queued again by [`Jobs::resume`] once the model is loaded.
    unfinished: Mutex<Vec<String>>,
    counts: Mutex<IngestCounts>,
}

/// What the ingest thread needs: the home and, once loaded, the served embedding model.
pub(crate) type EmbedderSlot = Arc<std::sync::OnceLock<Arc<LoadedEmbedder>>>;

impl Jobs {
    /// Files and documents ingested since the start.
    pub(crate) fn counts(&self) -> IngestCounts {
        self.counts.lock().expect("jobs lock").clone()
    }

    /// Starts the ingest thread, and finds every job a stop or a crash left unfinished ([`Jobs::resume`] queues
    /// them).
    pub(crate) fn start(home: Home, embedder: EmbedderSlot) -> Result<Arc<Jobs>, std::io::Error> {
        let dir = home.root().join("jobs");
        std::fs::create_dir_all(&dir)?;
        let (sender, receiver) = channel::<String>();
        let jobs = Arc::new(Jobs {
            dir: dir.clone(),
            uploads: home.root().join("uploads"),
            queue: Mutex::new(sender),
            live: Mutex::new(HashMap::new()),
            unfinished: Mutex::new(Vec::new()),
            counts: Mutex::new(IngestCounts::default()),
        });
        let mut unfinished = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                if let Some(job) = read_job(&path) {
                    let resume = matches!(job.state, JobState::Queued | JobState::Running);
                    let id = job.id.clone();
                    jobs.live
                        .lock()
                        .expect("jobs lock")
                        .insert(id.clone(), watch::channel(job).0);
                    if resume {
                        unfinished.push(id);
                    }
                }
            }
        }
        unfinished.sort();
        let worker = jobs.clone();
        std::thread::Builder::new()
            .name("knowhow-ingest".into())
            .spawn(move || {
                for id in receiver {
                    worker.run(&home, &embedder, &id);
                }
            })?;
        *jobs.unfinished.lock().expect("jobs lock") = unfinished;
        Ok(jobs)
    }

    /// Queues the unfinished jobs found at start; called once the embedding model is loaded.
    pub(crate) fn resume(&self) {
        let unfinished = std::mem::take(&mut *self.unfinished.lock().expect("jobs lock"));
        for id in unfinished {
            self.enqueue(&id);
        }
    }

    /// The folder uploads into `collection` are stored in.
    pub(crate) fn upload_dir(&self, collection: &CollectionRef) -> PathBuf {
        self.uploads.join(&collection.namespace).join(&collection.collection)
    }

    /// Records a new job for files already stored in [`Jobs::upload_dir`] and queues it; durable when this returns.
    pub(crate) fn submit(&self, collection: &CollectionRef, files: Vec<(String, String)>) -> std::io::Result<Job> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(std::io::Error::other)?;
        let id = format!("job_{}", random.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let job = Job {
            id: id.clone(),
            object: "ingest.job".into(),
            namespace: collection.namespace.clone(),
            collection: collection.collection.clone(),
            state: JobState::Queued,
            created: UtcDateTime::now().rfc3339(),
            finished: None,
            error: None,
            files: files
                .into_iter()
                .map(|(name, stored)| JobFile {
                    name,
                    stored,
                    state: FileState::Queued,
                    error: None,
                    problems: Vec::new(),
                })
                .collect(),
        };
        write_durably(&self.dir.join(format!("{id}.json")), &serde_json::to_vec_pretty(&job)?)?;
        self.live
            .lock()
            .expect("jobs lock")
            .insert(id.clone(), watch::channel(job.clone()).0);
        self.enqueue(&id);
        Ok(job)
    }

    fn enqueue(&self, id: &str) {
        // The receiver lives as long as the process: a send cannot fail while it runs.
        let _ = self.queue.lock().expect("jobs lock").send(id.to_string());
    }

    /// A job's live state, to read now or to watch.
    pub(crate) fn watch(&self, id: &str) -> Option<watch::Receiver<Job>> {
        self.live
            .lock()
            .expect("jobs lock")
            .get(id)
            .map(watch::Sender::subscribe)
    }

    /// Changes a job, then writes it and tells its watchers.
    fn update(&self, id: &str, change: impl FnOnce(&mut Job)) {
        let live = self.live.lock().expect("jobs lock");
        let Some(sender) = live.get(id) else {
            return;
        };
        let before: Vec<FileState> = sender.borrow().files.iter().map(|f| f.state).collect();
        sender.send_modify(change);
        let job = sender.borrow().clone();
        drop(live);
        let mut counts = self.counts.lock().expect("jobs lock");
        for (file, was) in job.files.iter().zip(before) {
            if file.state.finished() && !was.finished() {
                *counts.files.entry(file.state.name()).or_default() += 1;
            }
        }
        drop(counts);
        let path = self.dir.join(format!("{id}.json"));
        if let Err(e) = serde_json::to_vec_pretty(&job)
            .map_err(std::io::Error::from)
            .and_then(|b| write_durably(&path, &b))
        {
            crate::log::event(
                crate::log::Level::Error,
                "job_not_recorded",
                &format!("cannot record job {id} in {}: {e}", path.display()),
                serde_json::json!({"job": id, "path": path, "error": e.to_string()}),
            );
        }
    }

    fn run(&self, home: &Home, embedder: &EmbedderSlot, id: &str) {
        let Some(job) = self.watch(id).map(|w| w.borrow().clone()) else {
            return;
        };
        self.update(id, |job| {
            job.state = JobState::Running;
            for file in job.files.iter_mut().filter(|f| !f.state.finished()) {
                file.state = FileState::Queued;
            }
        });
        let outcome = self.ingest(home, embedder, &job);
        self.update(id, |job| {
            job.finished = Some(UtcDateTime::now().rfc3339());
            match outcome {
                Ok(()) => job.state = JobState::Done,
                Err(error) => {
                    job.state = JobState::Failed;
                    for file in job.files.iter_mut().filter(|f| !f.state.finished()) {
                        file.state = FileState::Failed;
                        file.error = Some("the job failed before this file was ingested".into());
                    }
                    job.error = Some(error);
                }
            }
        });
    }

    fn ingest(&self, home: &Home, embedder: &EmbedderSlot, job: &Job) -> Result<(), String> {
        let collection = job.collection_ref().ok_or("the job names no valid collection")?;
        let mut writer = home.open_writer(&collection, false).map_err(|e| e.to_string())?;
        let served = embedder.get().cloned().ok_or("the embedding model is not loaded")?;
        match writer.model_pin() {
            Some(pin) if pin.same_model(&served.pin) => {}
            Some(pin) => {
                return Err(format!(
                    "{collection}'s vectors come from {}, and this server embeds with {}",
                    pin.id, served.pin.id
                ))
            }
            None => writer.pin_model(&served.pin).map_err(|e| e.to_string())?,
        }
        let folder = self.upload_dir(&collection);
        let paths: Vec<PathBuf> = job.files.iter().map(|f| folder.join(&f.stored)).collect();
        let index_of = |source: &str| paths.iter().position(|p| p.to_string_lossy() == source);
        let id = job.id.clone();
        let mut on_event = |event: Event<'_>| match event {
            Event::Preparing { sources } => self.update(&id, |job| {
                for i in sources.iter().filter_map(|s| index_of(s)) {
                    job.files[i].state = FileState::Parsing;
                }
            }),
            Event::Embedding { .. } => self.update(&id, |job| {
                for file in job.files.iter_mut().filter(|f| f.state == FileState::Parsing) {
                    file.state = FileState::Embedding;
                }
            }),
            Event::File(report) => {
                let Some(i) = index_of(&report.source) else {
                    return;
                };
                if let Some(documents) = report.counts {
                    let mut counts = self.counts.lock().expect("jobs lock");
                    for (status, n) in [
                        ("added", documents.added),
                        ("updated", documents.updated),
                        ("unchanged", documents.unchanged),
                        ("removed", documents.removed),
                    ] {
                        *counts.documents.entry(status).or_default() += u64::from(n);
                    }
                }
                self.update(&id, |job| {
                    let file = &mut job.files[i];
                    file.state = match report.status {
                        FileStatus::Added | FileStatus::Updated => FileState::Indexed,
                        FileStatus::Unchanged => FileState::Unchanged,
                        FileStatus::Failed | FileStatus::Pruned => FileState::Failed,
                    };
                    file.error = report.error.clone();
                    file.problems = report.errors.iter().flatten().map(|p| p.error.clone()).collect();
                });
            }
            Event::Skipped(skipped) => {
                let Some(i) = index_of(&skipped.path) else {
                    return;
                };
                self.update(&id, |job| {
                    job.files[i].state = FileState::Failed;
                    job.files[i].error = Some(skipped.reason.clone());
                });
            }
            _ => {}
        };
        ingest(writer, Some(&served), &paths, &IngestOptions::default(), &mut on_event).map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn read_job(path: &Path) -> Option<Job> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(job) => Some(job),
        Err(e) => {
            crate::log::event(
                crate::log::Level::Warn,
                "job_file_ignored",
                &format!("ignoring {}: not a job file ({e})", path.display()),
                serde_json::json!({"path": path, "error": e.to_string()}),
            );
            None
        }
    }
}

/// Writes `bytes` to `path` atomically and durably: beside it, synced, then renamed over it.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploaded_names_never_leave_the_upload_folder() {
        assert_eq!(stored_name("report.pdf").unwrap(), "report.pdf");
        assert_eq!(stored_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(stored_name("/etc/shadow").unwrap(), "shadow");
        assert_eq!(stored_name("C:\\Users\\me\\notes.md").unwrap(), "notes.md");
        assert_eq!(
            stored_name("..").unwrap_err(),
            "the file name \"..\" has no usable name in it"
        );
        assert!(stored_name("a\0b.md").unwrap_err().contains("NUL"));
        assert!(stored_name("docs/").is_err());
        assert_eq!(stored_name(".hidden.md").unwrap(), "hidden.md");
        assert_eq!(stored_name("naïve café.txt").unwrap(), "na_ve caf_.txt");
        let long = format!("{}.md", "x".repeat(500));
        let kept = stored_name(&long).unwrap();
        assert_eq!(kept.len(), 200);
        assert!(kept.ends_with(".md"));
    }

    #[test]
    fn a_job_file_round_trips_and_unfinished_states_are_told_apart() {
        let job = Job {
            id: "job_1".into(),
            object: "ingest.job".into(),
            namespace: "ns".into(),
            collection: "c".into(),
            state: JobState::Running,
            created: "2026-12-07T00:00:00Z".into(),
            finished: None,
            error: None,
            files: vec![JobFile {
                name: "a.md".into(),
                stored: "a.md".into(),
                state: FileState::Embedding,
                error: None,
                problems: Vec::new(),
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_1.json");
        write_durably(&path, &serde_json::to_vec(&job).unwrap()).unwrap();
        assert_eq!(read_job(&path), Some(job));
        assert!(!FileState::Embedding.finished());
        assert!(FileState::Unchanged.finished());
        std::fs::write(&path, "{").unwrap();
        assert_eq!(read_job(&path), None);
    }
}
