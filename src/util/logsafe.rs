//! Text logs with every control character escaped: a file name (or a PACS answer, or a UID)
//! holding a newline or a carriage return cannot forge a log line, and one holding terminal
//! escapes cannot drive the operator's terminal. The formatter writes each event with one
//! `write`; this writer escapes it as a whole, keeping only the event's final newline and,
//! when colours are on, the colour sequences (`ESC [ digits ; m`).

use std::io::{self, Write};

/// A writer that escapes control characters (see the module).
pub struct SafeWriter<W: Write> {
    inner: W,
    ansi: bool,
}

impl<W: Write> SafeWriter<W> {
    pub fn new(inner: W, ansi: bool) -> SafeWriter<W> {
        SafeWriter { inner, ansi }
    }
}

/// `text` with its control characters escaped, except a final newline and, with `ansi`,
/// colour sequences.
pub fn escape_controls(text: &str, ansi: bool) -> String {
    let body = text.strip_suffix('\n');
    let s = body.unwrap_or(text);
    let mut out = String::with_capacity(s.len() + 8);
    for (i, c) in s.char_indices() {
        if c == '\u{1b}' && ansi && is_sgr(&s[i + 1..]) {
            out.push(c);
        } else if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if body.is_some() {
        out.push('\n');
    }
    out
}

/// Whether `rest` (after an ESC) starts with a colour sequence: `[`, digits and `;`, `m`.
fn is_sgr(rest: &str) -> bool {
    let Some(r) = rest.strip_prefix('[') else {
        return false;
    };
    let end = r
        .find(|c: char| !(c.is_ascii_digit() || c == ';'))
        .unwrap_or(r.len());
    r[end..].starts_with('m')
}

impl<W: Write> Write for SafeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.inner
            .write_all(escape_controls(&text, self.ansi).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped_but_the_final_newline_and_colours_stay() {
        assert_eq!(
            escape_controls(
                "WARN skipped path=a\n2026 INFO forged\r\u{1b}]0;x\u{7}\n",
                false
            ),
            "WARN skipped path=a\\n2026 INFO forged\\r\\u{1b}]0;x\\u{7}\n"
        );
        assert_eq!(
            escape_controls("\u{1b}[2m2026\u{1b}[0m \u{1b}[33mWARN\u{1b}[0m x\n", true),
            "\u{1b}[2m2026\u{1b}[0m \u{1b}[33mWARN\u{1b}[0m x\n"
        );
        assert_eq!(escape_controls("\u{1b}[2J", true), "\\u{1b}[2J");
        assert_eq!(escape_controls("tab\there é", false), "tab\there é");
    }
}
