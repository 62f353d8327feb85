//! BEIR dataset folders: `corpus.jsonl`, `queries.jsonl`, `qrels/SPLIT.tsv`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::Qrels;

/// The parts of a BEIR folder evaluation needs. The corpus itself is
/// ingested through the normal JSONL loader (`_id`, `title`, `text`).
#[derive(Debug)]
pub struct Dataset {
    pub corpus: PathBuf,
    /// Query id → text, for the queries judged in the split.
    pub queries: Vec<(String, String)>,
    pub qrels: Qrels,
}

/// Reads a BEIR folder for one split, with errors naming file and line.
pub fn load(dir: &Path, split: &str) -> Result<Dataset, String> {
    let corpus = dir.join("corpus.jsonl");
    if !corpus.is_file() {
        return Err(format!(
            "{}: not found (is {} a BEIR folder?)",
            corpus.display(),
            dir.display()
        ));
    }
    let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
    let qrels = read_qrels(&qrels_path)?;
    let queries_path = dir.join("queries.jsonl");
    let all = read_queries(&queries_path)?;
    let mut queries: Vec<(String, String)> = all.into_iter().filter(|(id, _)| qrels.contains_key(id)).collect();
    queries.sort();
    if queries.len() != qrels.len() {
        let missing = qrels.keys().find(|id| !queries.iter().any(|(q, _)| q == *id));
        return Err(format!(
            "{}: query {} of {} is missing",
            queries_path.display(),
            missing.map_or("?", |s| s.as_str()),
            qrels_path.display()
        ));
    }
    Ok(Dataset { corpus, queries, qrels })
}

fn read_qrels(path: &Path) -> Result<Qrels, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut qrels = Qrels::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        if i == 0 && fields.first() == Some(&"query-id") || line.trim().is_empty() {
            continue;
        }
        let [query, doc, score] = fields[..] else {
            return Err(format!("{}:{}: expected 3 tab-separated fields", path.display(), i + 1));
        };
        let score: i32 = score
            .trim()
            .parse()
            .map_err(|_| format!("{}:{}: score {score:?} is not an integer", path.display(), i + 1))?;
        qrels
            .entry(query.to_string())
            .or_default()
            .insert(doc.to_string(), score);
    }
    Ok(qrels)
}

fn read_queries(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut queries = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        let (Some(id), Some(text)) = (value["_id"].as_str(), value["text"].as_str()) else {
            return Err(format!(
                "{}:{}: needs string fields _id and text",
                path.display(),
                i + 1
            ));
        };
        queries.insert(id.to_string(), text.to_string());
    }
    Ok(queries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beir_folder_loads_only_the_judged_queries_and_reports_bad_lines() {
        let dir = tempfile_dir();
        std::fs::write(dir.join("corpus.jsonl"), "{}\n").unwrap();
        std::fs::write(
            dir.join("queries.jsonl"),
            "{\"_id\":\"1\",\"text\":\"q one\"}\n{\"_id\":\"2\",\"text\":\"q two\"}\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("qrels")).unwrap();
        std::fs::write(dir.join("qrels/test.tsv"), "query-id\tcorpus-id\tscore\n2\td9\t1\n").unwrap();
        let data = load(&dir, "test").unwrap();
        assert_eq!(data.queries, vec![("2".to_string(), "q two".to_string())]);
        assert_eq!(data.qrels["2"]["d9"], 1);
        std::fs::write(dir.join("qrels/test.tsv"), "query-id\tcorpus-id\tscore\n2\td9\n").unwrap();
        let err = load(&dir, "test").unwrap_err();
        assert!(err.ends_with("test.tsv:2: expected 3 tab-separated fields"), "{err}");
        assert!(load(&dir, "dev").unwrap_err().contains("dev.tsv"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("knowhow-beir-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
