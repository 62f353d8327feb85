//! The LoRA adapters a server answers with (`knowhow serve --adapter NAME`), each one a chat model over the
//! served base model. An adapter loads on its first request and stays loaded while the adapters held fit the
//! memory budget; past it, the one used longest ago is let go (a request still generating with it keeps it until
//! it finishes) and loads again when next asked for.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use knowhow_rag::llm::{ChatModel, LlmError};

use crate::metrics::AdapterLoads;

/// A chat model that one generation at a time holds.
pub type SharedModel = Arc<Mutex<Box<dyn ChatModel + Send>>>;

/// Makes the model of the adapter in a PEFT folder over the served base model.
pub type LoadAdapter = Box<dyn Fn(&Path) -> Result<Box<dyn ChatModel + Send>, LlmError> + Send + Sync>;

/// An adapter the server was started with.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedAdapter {
    /// Its model id: the registered name, or the folder's name for an adapter given as a folder.
    pub name: String,
    /// The registry version it resolved to (`NAME@N` and `NAME@vN` answer to it too).
    pub version: Option<u32>,
    /// The PEFT folder.
    pub dir: PathBuf,
    /// What it costs loaded, counted as the size of its weights file.
    pub bytes: u64,
}

impl ServedAdapter {
    /// Whether a request's `model` names this adapter.
    fn answers_to(&self, model: &str) -> bool {
        match model.split_once('@') {
            None => model == self.name,
            Some((name, version)) => {
                let number = version.strip_prefix('v').unwrap_or(version).parse::<u32>().ok();
                name == self.name && number.is_some() && number == self.version
            }
        }
    }
}

/// The served adapters and those of them loaded now.
pub struct Adapters {
    served: Vec<ServedAdapter>,
    budget_bytes: u64,
    load: LoadAdapter,
    /// Loaded adapters (index into `served`), the one used longest ago first.
    loaded: Mutex<Vec<(usize, SharedModel)>>,
    /// How many times each served adapter was loaded.
    loads: Vec<AtomicU64>,
}

impl Adapters {
    pub fn new(served: Vec<ServedAdapter>, budget_bytes: u64, load: LoadAdapter) -> Adapters {
        Adapters {
            loads: served.iter().map(|_| AtomicU64::new(0)).collect(),
            served,
            budget_bytes,
            load,
            loaded: Mutex::new(Vec::new()),
        }
    }

    /// No adapters: the base model only.
    pub fn none() -> Adapters {
        Adapters::new(
            Vec::new(),
            0,
            Box::new(|_| Err(LlmError::Config("no adapters are served".into()))),
        )
    }

    pub fn served(&self) -> &[ServedAdapter] {
        &self.served
    }

    /// The served adapter `model` names.
    pub fn find(&self, model: &str) -> Option<usize> {
        self.served.iter().position(|adapter| adapter.answers_to(model))
    }

    /// The model of served adapter `index`, loaded now if it is not (which takes a while: call it on a worker).
    pub fn model(&self, index: usize) -> Result<SharedModel, LlmError> {
        let mut loaded = self.loaded.lock().expect("no panic holds the adapters");
        if let Some(position) = loaded.iter().position(|(held, _)| *held == index) {
            let entry = loaded.remove(position);
            let model = entry.1.clone();
            loaded.push(entry);
            return Ok(model);
        }
        let model: SharedModel = Arc::new(Mutex::new((self.load)(&self.served[index].dir)?));
        self.loads[index].fetch_add(1, Ordering::Relaxed);
        loaded.push((index, model.clone()));
        let sizes: Vec<u64> = loaded.iter().map(|(held, _)| self.served[*held].bytes).collect();
        let evicted = to_evict(&sizes, self.budget_bytes);
        loaded.drain(..evicted);
        Ok(model)
    }

    /// Each served adapter: how many times it was loaded, and whether it is loaded now.
    pub(crate) fn report(&self) -> Vec<AdapterLoads> {
        let loaded = self.loaded.lock().expect("no panic holds the adapters");
        self.served
            .iter()
            .enumerate()
            .map(|(index, adapter)| AdapterLoads {
                name: adapter.name.clone(),
                loads: self.loads[index].load(Ordering::Relaxed),
                loaded: loaded.iter().any(|(held, _)| *held == index),
            })
            .collect()
    }
}

/// How many of the loaded adapters (sizes in order of last use, the newest last) to let go, oldest first, so that
/// the rest fit `budget`. The newest always stays: it is the one a request is waiting for.
fn to_evict(sizes: &[u64], budget: u64) -> usize {
    let mut total: u64 = sizes.iter().sum();
    let mut evicted = 0;
    while total > budget && evicted + 1 < sizes.len() {
        total -= sizes[evicted];
        evicted += 1;
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(name: &str, version: Option<u32>) -> ServedAdapter {
        ServedAdapter {
            name: name.into(),
            version,
            dir: PathBuf::from("/adapters").join(name),
            bytes: 10,
        }
    }

    #[test]
    fn an_adapter_answers_to_its_name_and_its_version() {
        let support = served("support", Some(3));
        for model in ["support", "support@3", "support@v3"] {
            assert!(support.answers_to(model), "{model}");
        }
        for model in ["support@2", "support@", "support@x", "supports", "local", "rag:support"] {
            assert!(!support.answers_to(model), "{model}");
        }
        let folder = served("my-adapter", None);
        assert!(folder.answers_to("my-adapter"));
        assert!(!folder.answers_to("my-adapter@1"));
    }

    #[test]
    fn the_adapters_used_longest_ago_go_first_until_the_rest_fit() {
        assert_eq!(to_evict(&[], 100), 0);
        assert_eq!(to_evict(&[40, 40], 100), 0);
        assert_eq!(to_evict(&[40, 40, 40], 100), 1);
        assert_eq!(to_evict(&[90, 5, 40], 50), 1);
        assert_eq!(to_evict(&[30, 30, 30], 40), 2);
        // One adapter larger than the budget still serves its request.
        assert_eq!(to_evict(&[30, 500], 100), 1);
        assert_eq!(to_evict(&[500], 100), 0);
    }
}
