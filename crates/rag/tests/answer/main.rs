//! Tests of grounded answering (`knowhow_rag::answer`) over real indexes:
//! `llm` drives the model paths with a scripted test model, `squad` measures
//! the extractive answerer on SQuAD. One test binary, so they link once.

mod llm;
mod squad;
mod support;
