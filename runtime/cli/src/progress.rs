//! The JSON-lines progress that migrations and drains answer with, shown as a spinner.

use std::time::Duration;

use anyhow::{Context as _, bail};
use doppel_api::Progress;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

/// Reads a stream of progress lines, showing each step on a spinner; returns every line.
async fn follow(response: reqwest::Response, json: bool) -> anyhow::Result<Vec<Progress>> {
    let spinner = if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    };
    let mut lines = Vec::new();
    let mut pending = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        pending.extend_from_slice(&chunk.context("the host stopped answering mid-way")?);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let progress: Progress = serde_json::from_slice(&line)
                .with_context(|| "the host sent a progress line this CLI does not understand")?;
            match &progress {
                // Steps go to stdout, above the spinner (which only a terminal shows).
                Progress::Step { text } if !json => {
                    spinner.suspend(|| println!("  {text}"));
                    spinner.set_message(text.clone());
                }
                Progress::Step { .. } => {}
                Progress::Moved(_) | Progress::Done { .. } | Progress::Failed { .. } => {}
            }
            lines.push(progress);
        }
    }
    spinner.finish_and_clear();
    Ok(lines)
}

/// The outcome of a progress stream: its last line must say done.
fn outcome(lines: &[Progress]) -> anyhow::Result<&str> {
    match lines.last() {
        Some(Progress::Done { text }) => Ok(text),
        Some(Progress::Failed { error }) => bail!("{error}"),
        _ => bail!("the host stopped before saying whether it finished; see `doppel events`"),
    }
}

/// Follows a progress stream to its end: with `json`, prints every line as JSON and answers
/// `None`; otherwise answers the final text and every line. A failed move is an error, named by
/// `failed` ("NAME was not moved"), after the JSON when `json`.
pub async fn finish(
    response: reqwest::Response,
    json: bool,
    failed: impl Fn() -> String,
) -> anyhow::Result<Option<(String, Vec<Progress>)>> {
    let lines = follow(response, json).await?;
    if json {
        crate::output::print_json(&lines)?;
        return outcome(&lines).map(|_| None);
    }
    let done = outcome(&lines).with_context(failed)?.to_string();
    Ok(Some((done, lines)))
}
