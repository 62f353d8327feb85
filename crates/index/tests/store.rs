//! Opening collections at the edges of their life: a store file that a
//! writer has created but not yet initialised.

// Shared with the other index tests, of which this file uses only a little.
#[allow(dead_code)]
mod common;

use common::collection;
use knowhow_index::{Error, Home};

/// `Database::create` makes the file before it locks and initialises it; a
/// reader that opened it in between once failed with redb's "file is empty"
/// error instead of "no such collection" (and could block the writer).
#[test]
fn an_empty_store_file_is_a_collection_still_being_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = Home::new(dir.path());
    let c = collection();
    let store_dir = dir.path().join("collections").join(&c.namespace).join(&c.collection);
    std::fs::create_dir_all(&store_dir).unwrap();
    std::fs::write(store_dir.join("store.redb"), b"").unwrap();

    assert!(!home.exists(&c));
    assert!(matches!(home.open_reader(&c), Err(Error::NoSuchCollection(_))));
    assert!(matches!(home.open_catalog(&c), Err(Error::NoSuchCollection(_))));
    assert!(!home.list().unwrap().contains(&c));

    // A writer finishes what the killed one started.
    home.open_writer(&c, true).expect("writer").finish().expect("finish");
    assert!(home.exists(&c));
    home.open_reader(&c).expect("reader");
    assert_eq!(home.list().unwrap(), vec![c]);
}
