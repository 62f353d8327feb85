//! Train / validation / test splits, and mixing in general-purpose rows.
//!
//! # Method
//!
//! Each row gets a key, `sha256("knowhow-split" ‖ seed ‖ sha256(normalized row))`, read as a number `u` in
//! `[0, 1)`. A row goes to validation when `u < validation`, to test when `u < validation + test`, else to train.
//! So a row's part depends only on its own content and the seed: the split is deterministic (no thread count, file
//! order or row count enters it), and adding or removing rows never moves any *other* row between parts — a row
//! once held out stays held out, so adapters trained on an older version of the file are still measured on rows
//! they never saw. The price: part sizes follow the ratios statistically rather than exactly (for 1,000 rows and
//! 10%, 100 ± 9), which the report shows.
//!
//! Duplicates are removed before splitting, so no row can be in two parts. Given explicit validation or test
//! files, those parts come from them, the remaining ratios are renormalized over the other parts, and input rows
//! equal to a row of those files are removed from the input (reported).
//!
//! Mixing general data: with ratio `r`, general rows make up `r` of the final training part, that is
//! `round(train · r / (1 − r))` rows, chosen by the same kind of seeded key (`"knowhow-mix"`), so growing the
//! general file changes the choice little. General rows equal to a task row are never used. Validation and test
//! stay task-only: they measure the task.
//!
//! Every part is written in seeded-key order (`"knowhow-order"`), shuffled rather than in file order.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::conversation::{checksum, Conversation};
use super::dataset::{CheckReport, Dataset};
use super::parse::Row;
use super::DataError;

/// The share of rows per part; must be non-negative and sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratios {
    pub train: f64,
    pub validation: f64,
    pub test: f64,
}

impl Default for Ratios {
    fn default() -> Self {
        Ratios {
            train: 0.8,
            validation: 0.1,
            test: 0.1,
        }
    }
}

impl Ratios {
    fn check(&self) -> Result<(), DataError> {
        let all = [self.train, self.validation, self.test];
        if all.iter().any(|r| !r.is_finite() || *r < 0.0) || (all.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
            return Err(DataError::Option(format!(
                "split ratios must be non-negative and sum to 1, got train {} validation {} test {}",
                self.train, self.validation, self.test
            )));
        }
        if self.train == 0.0 {
            return Err(DataError::Option("the train ratio must be above 0".to_string()));
        }
        Ok(())
    }
}

/// General-purpose rows to mix into the training part (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    pub path: PathBuf,
    /// Share of the final training part made of general rows, in `[0, 1)`; 0.1–0.2 is usual.
    pub ratio: f64,
}

/// Options for [`split`].
#[derive(Debug, Clone, PartialEq)]
pub struct SplitOptions {
    pub seed: u64,
    pub ratios: Ratios,
    /// Use this file as the validation part instead of drawing it from the input.
    pub validation_file: Option<PathBuf>,
    /// Use this file as the test part instead of drawing it from the input.
    pub test_file: Option<PathBuf>,
    pub mix: Option<Mix>,
    /// Any bad line in any input file fails the split.
    pub strict: bool,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            seed: 42,
            ratios: Ratios::default(),
            validation_file: None,
            test_file: None,
            mix: None,
            strict: false,
        }
    }
}

/// One written part.
#[derive(Debug, Clone, Serialize)]
pub struct PartReport {
    pub path: PathBuf,
    pub rows: usize,
    /// sha256 of the file's bytes (see [`checksum`]).
    pub checksum: String,
}

/// How the general data was mixed in.
#[derive(Debug, Clone, Serialize)]
pub struct MixReport {
    pub input: CheckReport,
    pub ratio: f64,
    /// General rows equal to a task row, never used.
    pub overlapping_task_rows: usize,
    /// Rows the ratio asks for.
    pub wanted: usize,
    /// Rows mixed in: fewer than `wanted` when the general file is too small.
    pub mixed: usize,
}

/// What `knowhow data split` reports.
#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    pub input: CheckReport,
    pub validation_input: Option<CheckReport>,
    pub test_input: Option<CheckReport>,
    pub seed: u64,
    /// The ratios the input was split by: the requested ones, renormalized when a part came from its own file.
    pub ratios: Ratios,
    /// Input rows equal to a row of an explicit validation or test file, removed so they cannot leak.
    pub removed_overlapping: usize,
    /// Task rows in the training part (before mixing).
    pub task_train_rows: usize,
    pub train: PartReport,
    pub validation: PartReport,
    pub test: PartReport,
    pub mix: Option<MixReport>,
    /// Things the user should look at: an empty part, less general data than asked for.
    pub warnings: Vec<String>,
}

/// Rows assigned to the three parts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parts {
    pub train: Vec<Row>,
    pub validation: Vec<Row>,
    pub test: Vec<Row>,
}

/// Splits `path` into `out_dir/{train,validation,test}.jsonl` (normalized chat rows). All three files are written
/// to temporary names, synced, then renamed, so a failed split never leaves a partial file under a final name.
pub fn split(path: &Path, out_dir: &Path, options: &SplitOptions) -> Result<SplitReport, DataError> {
    options.ratios.check()?;
    if let Some(mix) = &options.mix {
        if !(0.0..1.0).contains(&mix.ratio) {
            return Err(DataError::Option(format!(
                "the mix ratio must be in [0, 1), got {}",
                mix.ratio
            )));
        }
    }
    let input = Dataset::load(path, options.strict)?;
    let explicit_validation = load_optional(options.validation_file.as_deref(), options.strict)?;
    let explicit_test = load_optional(options.test_file.as_deref(), options.strict)?;

    let held_out: HashSet<[u8; 32]> = [&explicit_validation, &explicit_test]
        .into_iter()
        .flatten()
        .flat_map(|dataset| dataset.conversations().map(Conversation::hash))
        .collect();
    let before = input.rows.len();
    let rows: Vec<Row> = input
        .rows
        .iter()
        .filter(|row| !held_out.contains(&row.conversation.hash()))
        .cloned()
        .collect();
    let removed_overlapping = before - rows.len();

    let drawn = Ratios {
        validation: if explicit_validation.is_some() {
            0.0
        } else {
            options.ratios.validation
        },
        test: if explicit_test.is_some() {
            0.0
        } else {
            options.ratios.test
        },
        ..options.ratios
    };
    let total = drawn.train + drawn.validation + drawn.test;
    let ratios = Ratios {
        train: drawn.train / total,
        validation: drawn.validation / total,
        test: drawn.test / total,
    };
    let mut parts = assign(rows, options.seed, &ratios);
    if let Some(dataset) = &explicit_validation {
        parts.validation = dataset.rows.clone();
    }
    if let Some(dataset) = &explicit_test {
        parts.test = dataset.rows.clone();
    }
    let task_train_rows = parts.train.len();

    let mut warnings = Vec::new();
    let mix = match &options.mix {
        None => None,
        Some(mix) => {
            let general = Dataset::load(&mix.path, options.strict)?;
            let task: HashSet<[u8; 32]> = [&parts.train, &parts.validation, &parts.test]
                .into_iter()
                .flatten()
                .map(|row| row.conversation.hash())
                .collect();
            let candidates: Vec<Row> = general
                .rows
                .iter()
                .filter(|row| !task.contains(&row.conversation.hash()))
                .cloned()
                .collect();
            let overlapping_task_rows = general.rows.len() - candidates.len();
            let wanted = general_rows_wanted(task_train_rows, mix.ratio);
            let chosen = sample(candidates, wanted, options.seed);
            if chosen.len() < wanted {
                warnings.push(format!(
                    "{} has {} usable rows, fewer than the {wanted} that mix ratio {} asks for; all were mixed in",
                    mix.path.display(),
                    chosen.len(),
                    mix.ratio
                ));
            }
            let report = MixReport {
                input: CheckReport::of(&general),
                ratio: mix.ratio,
                overlapping_task_rows,
                wanted,
                mixed: chosen.len(),
            };
            parts.train.extend(chosen);
            Some(report)
        }
    };

    for (name, part, wanted) in [
        (
            "validation",
            &parts.validation,
            ratios.validation > 0.0 || explicit_validation.is_some(),
        ),
        ("test", &parts.test, ratios.test > 0.0 || explicit_test.is_some()),
    ] {
        if part.is_empty() && wanted {
            warnings.push(format!(
                "the {name} part is empty: add rows, raise its ratio, or give an explicit {name} file"
            ));
        }
    }

    let written = write_parts(out_dir, &mut parts, options.seed)?;
    let [train, validation, test] = written;
    Ok(SplitReport {
        input: CheckReport::of(&input),
        validation_input: explicit_validation.as_ref().map(CheckReport::of),
        test_input: explicit_test.as_ref().map(CheckReport::of),
        seed: options.seed,
        ratios,
        removed_overlapping,
        task_train_rows,
        train,
        validation,
        test,
        mix,
        warnings,
    })
}

fn load_optional(path: Option<&Path>, strict: bool) -> Result<Option<Dataset>, DataError> {
    path.map(|path| Dataset::load(path, strict)).transpose()
}

/// Assigns each row to a part by its seeded key (see the module docs). Rows keep their input order within a part.
pub fn assign(rows: Vec<Row>, seed: u64, ratios: &Ratios) -> Parts {
    let validation_below = threshold(ratios.validation);
    let test_below = threshold(ratios.validation + ratios.test);
    let mut parts = Parts::default();
    for row in rows {
        let u = key_prefix(b"knowhow-split", seed, &row.conversation);
        if u < validation_below {
            parts.validation.push(row);
        } else if u < test_below {
            parts.test.push(row);
        } else {
            parts.train.push(row);
        }
    }
    parts
}

/// General rows that make up `ratio` of a training part holding `task_rows` task rows.
pub fn general_rows_wanted(task_rows: usize, ratio: f64) -> usize {
    if ratio <= 0.0 {
        return 0;
    }
    (task_rows as f64 * ratio / (1.0 - ratio)).round() as usize
}

/// The `count` rows with the smallest seeded mix keys (all of them when there are fewer).
pub fn sample(mut rows: Vec<Row>, count: usize, seed: u64) -> Vec<Row> {
    rows.sort_by_cached_key(|row| key(b"knowhow-mix", seed, &row.conversation));
    rows.truncate(count);
    rows
}

fn write_parts(out_dir: &Path, parts: &mut Parts, seed: u64) -> Result<[PartReport; 3], DataError> {
    std::fs::create_dir_all(out_dir).map_err(|source| DataError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut staged = Vec::with_capacity(3);
    for (name, rows) in [
        ("train", &mut parts.train),
        ("validation", &mut parts.validation),
        ("test", &mut parts.test),
    ] {
        rows.sort_by_cached_key(|row| key(b"knowhow-order", seed, &row.conversation));
        let path = out_dir.join(format!("{name}.jsonl"));
        let temporary = out_dir.join(format!(".{name}.jsonl.tmp-{}", std::process::id()));
        let conversations: Vec<&Conversation> = rows.iter().map(|row| &row.conversation).collect();
        let result = write_synced(&temporary, &conversations);
        if let Err(source) = result {
            for (temporary, _) in &staged {
                let _ = std::fs::remove_file(temporary);
            }
            let _ = std::fs::remove_file(&temporary);
            return Err(DataError::Write {
                path: temporary,
                source,
            });
        }
        staged.push((
            temporary,
            PartReport {
                path,
                rows: rows.len(),
                checksum: checksum(conversations),
            },
        ));
    }
    let mut reports = Vec::with_capacity(3);
    for (temporary, report) in staged {
        std::fs::rename(&temporary, &report.path).map_err(|source| DataError::Write {
            path: report.path.clone(),
            source,
        })?;
        reports.push(report);
    }
    Ok(reports.try_into().expect("three parts were staged"))
}

fn write_synced(path: &Path, rows: &[&Conversation]) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for row in rows {
        file.write_all(row.to_json_line().as_bytes())?;
        file.write_all(b"\n")?;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

fn key(domain: &[u8], seed: u64, conversation: &Conversation) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    hasher.update(seed.to_le_bytes());
    hasher.update(conversation.hash());
    hasher.finalize().into()
}

/// The key's first 8 bytes: `u · 2⁶⁴` for the `u` of the module docs.
fn key_prefix(domain: &[u8], seed: u64, conversation: &Conversation) -> u64 {
    let key = key(domain, seed, conversation);
    u64::from_be_bytes(key[..8].try_into().expect("8 bytes"))
}

/// `ratio · 2⁶⁴`, saturating at the top so that a cumulative ratio of 1 takes every key.
fn threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio * 18_446_744_073_709_551_616.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::super::conversation::Message;
    use super::super::parse::Shape;
    use super::*;

    fn rows(prefix: &str, count: usize) -> Vec<Row> {
        (0..count)
            .map(|i| Row {
                line: i + 1,
                shape: Shape::PromptCompletion,
                conversation: Conversation {
                    messages: vec![
                        Message::user(format!("{prefix} question {i}")),
                        Message::assistant(format!("{i}")),
                    ],
                },
            })
            .collect()
    }

    fn lines(rows: &[Row]) -> Vec<usize> {
        rows.iter().map(|row| row.line).collect()
    }

    #[test]
    fn ratios_are_met_within_sampling_error() {
        let n = 20_000;
        let parts = assign(rows("task", n), 7, &Ratios::default());
        assert_eq!(parts.train.len() + parts.validation.len() + parts.test.len(), n);
        // Binomial standard deviation for 10% of 20,000 is ~42; allow 5 of them.
        for (part, expected) in [(&parts.train, 0.8), (&parts.validation, 0.1), (&parts.test, 0.1)] {
            let expected = expected * n as f64;
            assert!(
                (part.len() as f64 - expected).abs() < 5.0 * 57.0,
                "{} vs {expected}",
                part.len()
            );
        }
        let custom = assign(
            rows("task", n),
            7,
            &Ratios {
                train: 0.5,
                validation: 0.0,
                test: 0.5,
            },
        );
        assert!(custom.validation.is_empty());
        assert!((custom.test.len() as f64 - 10_000.0).abs() < 5.0 * 71.0);
    }

    #[test]
    fn same_seed_same_split_and_other_seeds_differ() {
        let a = assign(rows("task", 500), 1, &Ratios::default());
        let b = assign(rows("task", 500), 1, &Ratios::default());
        assert_eq!(a, b);
        let c = assign(rows("task", 500), 2, &Ratios::default());
        assert_ne!(lines(&a.validation), lines(&c.validation));
    }

    #[test]
    fn adding_or_reordering_rows_moves_no_existing_row() {
        let before = assign(rows("task", 300), 5, &Ratios::default());
        let mut grown = rows("task", 300);
        grown.extend(rows("more", 200));
        grown.reverse();
        let after = assign(grown, 5, &Ratios::default());
        let kept = |part: &[Row]| {
            let mut texts: Vec<String> = part
                .iter()
                .map(|row| row.conversation.messages[0].content.clone())
                .filter(|text| text.starts_with("task"))
                .collect();
            texts.sort();
            texts
        };
        assert_eq!(kept(&before.train), kept(&after.train));
        assert_eq!(kept(&before.validation), kept(&after.validation));
        assert_eq!(kept(&before.test), kept(&after.test));
    }

    #[test]
    fn mixing_ratio_is_the_share_of_the_final_training_part() {
        assert_eq!(general_rows_wanted(850, 0.15), 150);
        assert_eq!(general_rows_wanted(100, 0.0), 0);
        let general = rows("general", 1000);
        let chosen = sample(general.clone(), 150, 3);
        assert_eq!(chosen.len(), 150);
        assert_eq!(lines(&chosen), lines(&sample(general.clone(), 150, 3)));
        assert_ne!(lines(&chosen), lines(&sample(general.clone(), 150, 4)));
        // Not simply the first rows of the file.
        assert_ne!(lines(&chosen), (1..=150).collect::<Vec<_>>());
        assert_eq!(sample(rows("general", 10), 150, 3).len(), 10);
    }

    #[test]
    fn bad_ratios_are_refused() {
        for ratios in [
            Ratios {
                train: 0.8,
                validation: 0.1,
                test: 0.2,
            },
            Ratios {
                train: 1.1,
                validation: -0.1,
                test: 0.0,
            },
            Ratios {
                train: 0.0,
                validation: 0.5,
                test: 0.5,
            },
            Ratios {
                train: f64::NAN,
                validation: 0.1,
                test: 0.1,
            },
        ] {
            assert!(ratios.check().is_err(), "{ratios:?}");
        }
        assert!(Ratios::default().check().is_ok());
    }
}
