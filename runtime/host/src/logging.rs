//! `wasi:logging/logging@0.1.0-draft` (what Spin and wasmCloud components log through): each
//! message goes to the service's log, its level as the line's stream (`doppel logs` shows
//! `warn`, `error`… beside `stdout` and `stderr`), its context in front of the text.
//!
//! The service log is bounded already (lines kept, and one line's length); a message is cut to
//! that length here so that a guest cannot make the host copy more than it keeps.

use crate::state::RequestState;

mod generated {
    wasmtime::component::bindgen!({
        path: "../../modules/wit/logging",
        world: "wasi:logging/imports",
    });
}

use generated::wasi::logging::logging::{Host, Level};

/// The longest context plus message kept, in bytes.
const MAX_MESSAGE: usize = 16 << 10;

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
        Level::Critical => "critical",
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Host for RequestState {
    fn log(&mut self, level: Level, context: String, message: String) {
        let line = if context.is_empty() {
            cut(&message, MAX_MESSAGE).to_string()
        } else {
            let context = cut(&context, MAX_MESSAGE / 4);
            format!("{context}: {}", cut(&message, MAX_MESSAGE - context.len()))
        };
        self.log.push(level_name(level), line);
    }
}

/// Adds `wasi:logging` to `linker`.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<RequestState>,
) -> wasmtime::Result<()> {
    generated::wasi::logging::logging::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
        linker,
        |s| s,
    )
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcdef", 3), "abc");
        assert_eq!(cut("aé", 2), "a");
    }
}
