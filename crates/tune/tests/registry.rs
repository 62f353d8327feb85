//! The adapter registry on disk: register versions, list, show, resolve by name, export, remove.

use std::path::Path;

use knowhow_tune::registry::{
    self, AdapterRef, BaseModel, Card, DatasetInfo, HyperParameters, Metrics, Registry, RegistryError,
};

/// A PEFT-shaped folder (the registry copies files; their content is the decoder crate's business).
fn fake_adapter(dir: &Path, weights: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8}"#,
    )
    .unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), weights).unwrap();
}

fn card(name: &str, val_loss: f64) -> Card {
    Card {
        name: name.into(),
        version: 0,
        base_model: BaseModel {
            path: "/models/base".into(),
            sha256: "ab".repeat(32),
        },
        dataset: DatasetInfo {
            path: "data.jsonl".into(),
            sha256: "cd".repeat(32),
            train_rows: 80,
            validation_rows: 10,
            test_rows: 10,
            test_sha256: "ef".repeat(32),
            mix: None,
        },
        hyper_parameters: HyperParameters {
            r: 4,
            alpha: 8.0,
            dropout: 0.05,
            targets: vec!["q_proj".into(), "v_proj".into()],
            lr: 2e-4,
            epochs: 3,
            batch_size: 4,
            grad_accum: 1,
            max_length: 512,
            warmup_steps: 1,
            seed: 42,
        },
        metrics: Metrics {
            val_loss: Some(val_loss),
            ..Metrics::default()
        },
        created: knowhow_core::time::UtcDateTime::now().rfc3339(),
        knowhow_version: "0.1.0".into(),
    }
}

#[test]
fn round_trip_create_list_show_versions_export_remove() {
    let home = tempfile::tempdir().unwrap();
    let registry = Registry::new(home.path());
    assert!(registry.list().unwrap().is_empty());

    let staged = home.path().join("staged");
    fake_adapter(&staged, b"first");
    let v1 = registry.register(&staged, card("json-fmt", 1.5)).unwrap();
    fake_adapter(&staged, b"second");
    let v2 = registry.register(&staged, card("json-fmt", 0.9)).unwrap();
    let other = registry.register(&staged, card("tone", 2.0)).unwrap();
    assert_eq!((v1.card.version, v2.card.version, other.card.version), (1, 2, 1));
    assert_eq!(v2.dir, home.path().join("adapters/json-fmt/v2"));
    assert_eq!(
        std::fs::read(v1.dir.join("adapter_model.safetensors")).unwrap(),
        b"first"
    );

    let listed: Vec<(String, u32)> = registry
        .list()
        .unwrap()
        .into_iter()
        .map(|e| (e.card.name, e.card.version))
        .collect();
    assert_eq!(
        listed,
        [("json-fmt".into(), 1), ("json-fmt".into(), 2), ("tone".into(), 1)]
    );
    assert_eq!(registry.versions("json-fmt").unwrap(), [1, 2]);

    // By name: the latest version; by name@N: that one; cards read back as written.
    let latest = registry.get(&AdapterRef::parse("json-fmt").unwrap()).unwrap();
    assert_eq!(latest.card, v2.card);
    assert_eq!(
        registry
            .get(&AdapterRef::parse("json-fmt@1").unwrap())
            .unwrap()
            .card
            .metrics
            .val_loss,
        Some(1.5)
    );
    assert!(matches!(
        registry.get(&AdapterRef::parse("json-fmt@7").unwrap()),
        Err(RegistryError::NoSuchVersion { version: 7, .. })
    ));
    assert_eq!(registry::resolve_adapter(home.path(), "json-fmt@1").unwrap(), v1.dir);
    assert_eq!(
        registry::resolve_adapter(home.path(), staged.to_str().unwrap()).unwrap(),
        staged
    );
    assert!(registry::resolve_adapter(home.path(), "missing").is_err());
    assert!(registry::resolve_adapter(home.path(), "../../etc").is_err());

    // Evaluation results are written back onto the card.
    let mut entry = latest;
    entry.card.metrics.evaluation = Some(serde_json::json!({"exact_match": 0.75}));
    registry.update_card(&entry).unwrap();
    assert_eq!(
        registry::read_card(&entry.dir).unwrap().metrics.evaluation.unwrap()["exact_match"],
        0.75
    );

    let exported = home.path().join("export");
    registry
        .export(&AdapterRef::parse("json-fmt@2").unwrap(), &exported)
        .unwrap();
    for file in ["adapter_config.json", "adapter_model.safetensors", "card.json"] {
        assert_eq!(
            std::fs::read(exported.join(file)).unwrap(),
            std::fs::read(v2.dir.join(file)).unwrap()
        );
    }
    assert!(matches!(
        registry.export(&AdapterRef::parse("json-fmt").unwrap(), &exported),
        Err(RegistryError::Exists(_))
    ));

    // rm NAME@N removes one version; a new registration continues after the highest left.
    assert_eq!(
        registry.remove(&AdapterRef::parse("json-fmt@1").unwrap()).unwrap(),
        std::slice::from_ref(&v1.dir)
    );
    assert!(!v1.dir.exists());
    assert_eq!(registry.versions("json-fmt").unwrap(), [2]);
    assert_eq!(
        registry.register(&staged, card("json-fmt", 0.8)).unwrap().card.version,
        3
    );
    // rm NAME removes every version and the name.
    assert_eq!(
        registry.remove(&AdapterRef::parse("json-fmt").unwrap()).unwrap().len(),
        2
    );
    assert!(!home.path().join("adapters/json-fmt").exists());
    assert!(matches!(
        registry.remove(&AdapterRef::parse("json-fmt").unwrap()),
        Err(RegistryError::NotFound { .. })
    ));
    assert_eq!(registry.list().unwrap().len(), 1);
}

#[test]
fn refuses_folders_without_peft_files_and_bad_names() {
    let home = tempfile::tempdir().unwrap();
    let registry = Registry::new(home.path());
    let empty = home.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(matches!(
        registry.register(&empty, card("x", 1.0)),
        Err(RegistryError::MissingFile { .. })
    ));
    fake_adapter(&empty, b"w");
    assert!(matches!(
        registry.register(&empty, card("a/b", 1.0)),
        Err(RegistryError::InvalidName { .. })
    ));
    assert!(!home.path().join("adapters/a").exists());
}

#[test]
fn weights_hash_equals_sha256sum_of_a_single_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"abc").unwrap();
    std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
    // sha256("abc"), the FIPS 180-2 test vector.
    assert_eq!(
        registry::weights_sha256(dir.path()).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
