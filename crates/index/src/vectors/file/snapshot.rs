//! The reader's side of the vector file: the rows a manifest covers, mapped.

use std::fs::File;
use std::path::Path;

use super::{generation_file, read_manifest, read_records, row_bytes, DocRecord, Manifest, ROWS};
use crate::{io_error, Error, ModelPin};

/// A reader's view of the vector file: the state of one manifest.
pub(crate) struct VectorSnapshot {
    pub(crate) pin: Option<ModelPin>,
    /// The store sequence number of the manifest this view was loaded from.
    pub(crate) seq: u64,
    /// The live document versions, in row order.
    pub(crate) docs: Vec<DocRecord>,
    rows: Option<memmap2::Mmap>,
}

impl VectorSnapshot {
    /// The last durable state in `dir`; `None` when there is none yet.
    pub(crate) fn load(dir: &Path) -> Result<Option<VectorSnapshot>, Error> {
        // A compaction may unlink the generation a manifest names between our
        // reading the two: then the new manifest names the new one.
        let mut attempts = 0;
        loop {
            let Some(manifest) = read_manifest(dir)? else {
                return Ok(None);
            };
            match Self::load_generation(dir, manifest) {
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound && attempts < 8 => {
                    attempts += 1
                }
                result => return result.map(Some),
            }
        }
    }

    fn load_generation(dir: &Path, manifest: Manifest) -> Result<VectorSnapshot, Error> {
        let rows_path = generation_file(dir, ROWS, manifest.generation);
        let rows_file = File::open(&rows_path).map_err(io_error("open", &rows_path))?;
        let (records, dead) = read_records(dir, &manifest)?;
        let len = manifest.rows * row_bytes(manifest.pin.as_ref());
        let rows = if len == 0 {
            None
        } else {
            // SAFETY: the writer never changes bytes inside a manifest's
            // prefix: it only appends, cuts past the latest manifest, or
            // unlinks whole generations (which keeps this map valid).
            Some(
                unsafe { memmap2::MmapOptions::new().len(len as usize).map(&rows_file) }
                    .map_err(io_error("map", &rows_path))?,
            )
        };
        let docs = (0u64..)
            .zip(records)
            .filter(|(record, _)| !dead.contains(record))
            .map(|(_, doc)| doc)
            .collect();
        Ok(VectorSnapshot {
            seq: manifest.seq,
            pin: manifest.pin,
            docs,
            rows,
        })
    }

    /// Every row, `dimension` values each, dead ones included.
    pub(crate) fn matrix(&self) -> &[f32] {
        let Some(rows) = &self.rows else {
            return &[];
        };
        // SAFETY: any bit pattern is an f32; `align_to` only hands out the
        // aligned middle, and a page-aligned map has no unaligned ends.
        let (head, floats, tail) = unsafe { rows.align_to::<f32>() };
        assert!(head.is_empty() && tail.is_empty(), "the vector map is page-aligned");
        floats
    }
}
