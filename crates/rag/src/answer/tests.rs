use knowhow_index::SourceChunk;

use super::pipeline::enough_evidence;
use super::sources::{merge, tests::chunk};
use super::*;

fn sources(texts: &[&str]) -> Vec<Source> {
    let chunks: Vec<(SourceChunk, f32)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (chunk(&format!("d{i}"), 0, t, 0, t.chars().count()), 1.0))
        .collect();
    merge(&chunks)
}

#[test]
fn term_coverage_is_the_best_single_source_fraction_of_question_terms() {
    let given = sources(&["The Denver Broncos won Super Bowl 50.", "Tickets were expensive."]);
    // won, super, bowl, 50 → all in the first source.
    assert_eq!(term_coverage("Who won Super Bowl 50?", &given), 1.0);
    // ticket, price, super, bowl: super and bowl in the first source.
    assert!((term_coverage("What was the ticket price at the Super Bowl?", &given) - 0.5).abs() < 1e-6);
    assert_eq!(term_coverage("What is the boiling point of mercury?", &given), 0.0);
    assert_eq!(term_coverage("What is it?", &given), 1.0);
}

#[test]
fn weak_evidence_abstains_at_the_threshold_and_lists_the_closest_sources() {
    let mut answer = Answer::new(
        "What is the boiling point of mercury?",
        AnswerMode::Hybrid,
        &Backend::Extractive,
    );
    answer.sources = sources(&["Mercury is a planet.", "Water boils at 100 degrees.", "a", "b"]);
    // boil, point, mercuri: one of three terms per source.
    let mut options = AnswerOptions {
        min_term_coverage: 0.34,
        ..AnswerOptions::default()
    };
    assert!(!enough_evidence(&mut answer, &options));
    assert!(answer.abstained);
    assert_eq!(answer.text, NOT_FOUND);
    assert_eq!(answer.closest.len(), 3);
    match answer.abstention {
        Some(Abstention::WeakEvidence { coverage, threshold }) => {
            assert!((coverage - 1.0 / 3.0).abs() < 1e-6);
            assert_eq!(threshold, 0.34);
        }
        other => panic!("{other:?}"),
    }
    options.min_term_coverage = 0.33;
    answer.abstained = false;
    assert!(enough_evidence(&mut answer, &options));
    assert!(!answer.abstained);
}

#[test]
fn the_abstention_phrase_is_recognised_loosely_but_not_a_real_answer() {
    let phrase = DEFAULT_ABSTAIN_PHRASE;
    assert!(is_abstention("I could not find the answer in the documents.", phrase));
    assert!(is_abstention(
        "  i could not find the answer\nin the documents ",
        phrase
    ));
    assert!(is_abstention("", phrase));
    assert!(!is_abstention("The Broncos won [1].", phrase));
}
