//! Printing helpers shared by the commands.

use std::io::IsTerminal;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

/// Prints an error chain as `error: outer: inner`, then the command that
/// fixes it where there is one, and returns failure.
pub fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    if let Some(hint) = error.chain().find_map(hint) {
        eprintln!("hint: {hint}");
    }
    ExitCode::FAILURE
}

/// The command line's way out of a library error (libraries name no commands or flags).
fn hint(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    use knowhow_index::Error;
    let index_error = match error.downcast_ref::<knowhow_rag::Error>() {
        Some(knowhow_rag::Error::Index(inner)) => inner,
        _ => error.downcast_ref::<Error>()?,
    };
    match index_error {
        Error::ModelMismatch { given, .. } => Some(format!(
            "`knowhow reembed --model {}` moves the collection to the new model",
            given.id
        )),
        Error::NoModel(_) => Some("`knowhow reembed --model MODEL` adds vectors".into()),
        Error::Unembedded { model, .. } => Some(format!("`knowhow reembed --model {}` embeds them", model.id)),
        _ => None,
    }
}

/// Writes the command's output (`outln!`, `out!`). A closed pipe exits with success at once: whoever read the
/// output has all they wanted. Any other failure to write is a panic, as with `println!`.
pub fn write_stdout(text: std::fmt::Arguments) {
    use std::io::Write as _;
    let written = std::io::stdout().lock().write_fmt(text);
    if let Err(error) = closed_pipe_ends_quietly(written) {
        panic!("failed printing to stdout: {error}");
    }
}

/// A write to stdout that failed because its reader went away ends the process with success; other errors are
/// the caller's.
pub fn closed_pipe_ends_quietly(written: std::io::Result<()>) -> std::io::Result<()> {
    match written {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other,
    }
}

/// Prints one JSON value on its own line.
pub fn json_line(value: &serde_json::Value) {
    outln!("{value}");
}

/// A progress bar on stderr, hidden when stderr is not a terminal or when
/// the output is JSON (scripts read stdout; a bar would only be noise).
pub fn progress(total: u64, json: bool, message: &str) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

/// Marks byte ranges of `text` for a reader: bold on a terminal, `**x**`
/// otherwise.
pub fn mark(text: &str, ranges: &[(usize, usize)]) -> String {
    let (open, close) = if std::io::stdout().is_terminal() {
        ("\x1b[1;33m", "\x1b[0m")
    } else {
        ("**", "**")
    };
    let mut out = String::with_capacity(text.len() + ranges.len() * 8);
    let mut at = 0;
    for &(start, end) in ranges {
        if start < at || end > text.len() {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(open);
        out.push_str(&text[start..end]);
        out.push_str(close);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}
