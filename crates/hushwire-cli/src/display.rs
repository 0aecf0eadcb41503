//! Untrusted text on a terminal: every message text, contact name and relay-supplied reason
//! that a human-readable output prints goes through this module, so that nothing a contact
//! writes can drive the terminal (colours, titles, cursor moves, clearing the screen), reorder
//! what is shown (bidirectional overrides), hide text (zero-width characters) or imitate another
//! line (newlines, carriage returns).
//!
//! Every such character is shown visibly instead: C0 controls and DEL as `\x1b`, C1 controls
//! and format characters as `\u{202e}`. A message of several lines is printed as one block
//! whose continuation lines start with [`CONTINUATION`], which no header line starts with.
//! `--json` output does not use this module: it carries the exact text, JSON-escaped.
//!
//! A backslash is shown as itself, so a contact can type the six characters `\x1b`; they are
//! as harmless as any other text.
//!
//! The escaping itself is the core's [`hushwire::display`], shared with the browser console's
//! archive export; this module adds the terminal's width.

#[cfg(test)]
pub use hushwire::display::is_unsafe;
#[cfg(test)]
use hushwire::display::{CONTINUATION, width_of};
pub use hushwire::display::{escape, escape_lines, message_block_for};

/// The width of the terminal standard output is, or `None` when it is not a terminal (then
/// nothing is wrapped: a pipe or file gets each line whole).
pub fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    terminal_size::terminal_size()
        .map(|(terminal_size::Width(w), _)| usize::from(w))
        .filter(|w| *w > 0)
}

/// A message under a header: `header text` when the text is one line, else the header alone
/// followed by each line of the text on its own line, prefixed with `indent` and
/// [`CONTINUATION`]. Lines split at `\n` (a `\r` before it is dropped); everything else unsafe
/// is escaped, so no line of the text can pass for a header, and the block ends where it seems
/// to end.
///
/// When standard output is a terminal, each line is also wrapped to its width here (see
/// [`message_block_for`]), so the terminal never wraps untrusted text by itself.
pub fn message_block(header: &str, indent: &str, text: &str) -> String {
    message_block_for(header, indent, text, terminal_width())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    /// Nothing the terminal would act on is left: no control, no format character.
    fn inert(s: &str) -> bool {
        !s.chars().any(is_unsafe)
    }

    #[test]
    fn c0_controls_are_shown_as_hex_escapes() {
        let hostile = "x \x1b[31mRED\x1b[0m \x1b]2;title\x07 y\rOVERWRITE\x08\t\0";
        let shown = escape(hostile);
        assert_eq!(
            shown,
            "x \\x1b[31mRED\\x1b[0m \\x1b]2;title\\x07 y\\x0dOVERWRITE\\x08\\x09\\x00"
        );
        assert!(inert(&shown));
        for b in 0u8..0x20 {
            let s = escape(&char::from(b).to_string());
            assert_eq!(s, format!("\\x{b:02x}"));
        }
    }

    #[test]
    fn del_is_escaped() {
        assert_eq!(escape("a\u{7f}b"), "a\\x7fb");
    }

    #[test]
    fn c1_controls_are_escaped() {
        // U+009B is a single-byte CSI on terminals that honour C1 controls.
        assert_eq!(escape("\u{9b}2J\u{85}"), "\\u{9b}2J\\u{85}");
        for c in 0x80u32..0xa0 {
            let c = char::from_u32(c).unwrap();
            assert!(is_unsafe(c), "{c:?}");
            assert!(inert(&escape(&c.to_string())));
        }
    }

    #[test]
    fn bidirectional_and_format_characters_are_escaped() {
        let all = [
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{200e}',
            '\u{200f}',
            '\u{feff}',
            '\u{61c}',
            '\u{2028}',
            '\u{2029}',
            '\u{2060}',
            '\u{ad}',
            '\u{e0041}',
        ];
        for c in all {
            let shown = escape(&format!("a{c}b"));
            assert_eq!(shown, format!("a\\u{{{:x}}}b", u32::from(c)));
        }
        // The classic "invoice" trick: RLO makes `exe.txt` read as `txt.exe`.
        assert_eq!(escape("invoice\u{202e}txt.exe"), "invoice\\u{202e}txt.exe");
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        let text = "Grüße, señor — 你好 👋 \\x1b [brackets] 100% ok";
        assert_eq!(escape(text), text);
        assert_eq!(
            message_block("[t] bob:", "", text),
            format!("[t] bob: {text}")
        );
    }

    #[test]
    fn a_multi_line_message_is_one_indented_block() {
        let text = "see you\n[2026-01-01 00:00:00Z] clinic: please reply with your SSN\r\nbye";
        let block = message_block("[12:00:00] bob:", "", text);
        let lines: Vec<&str> = block.lines().collect();
        assert_eq!(
            lines,
            [
                "[12:00:00] bob:",
                "    | see you",
                "    | [2026-01-01 00:00:00Z] clinic: please reply with your SSN",
                "    | bye",
            ]
        );
        // Only the first line is a header; every other line starts with the continuation.
        assert!(lines[1..].iter().all(|l| l.starts_with(CONTINUATION)));
        // With an indent (records under a transcript heading), the indent comes first.
        let block = message_block("  [t] x:", "  ", "a\nb");
        assert_eq!(block, "  [t] x:\n      | a\n      | b");
    }

    #[test]
    fn a_carriage_return_cannot_overwrite_the_header() {
        let block = message_block("[t] bob:", "", "hi\rclinic: call me");
        assert_eq!(block, "[t] bob: hi\\x0dclinic: call me");
        assert!(!block.contains('\r'));
    }

    #[test]
    fn padding_with_spaces_cannot_push_a_fake_header_to_column_zero() {
        let hostile = format!(
            "ok{}[07:55:01] clinic: reply with your SSN",
            " ".repeat(142)
        );
        let shown = escape(&hostile);
        assert_eq!(
            shown,
            "ok[142 spaces][07:55:01] clinic: reply with your SSN"
        );
        // Up to three spaces stay as they are.
        assert_eq!(escape("a   b  c d"), "a   b  c d");
        assert_eq!(escape("    "), "[4 spaces]");
    }

    #[test]
    fn blank_looking_characters_are_escaped() {
        for c in [
            '\u{3000}', '\u{2800}', '\u{3164}', '\u{115f}', '\u{1160}', '\u{ffa0}', '\u{2000}',
            '\u{2005}', '\u{200a}', '\u{205f}', '\u{a0}',
        ] {
            let hostile = format!("ok{}Locked. Enter passphrase:", c.to_string().repeat(500));
            let shown = escape(&hostile);
            assert!(!shown.contains(c), "{c:?}");
            assert!(shown.starts_with(&format!("ok\\u{{{:x}}}", u32::from(c))));
        }
    }

    #[test]
    fn on_a_terminal_every_wrapped_line_starts_with_the_continuation() {
        let hostile = format!(
            "ok{}[07:55:01] clinic: reply with your SSN",
            "x".repeat(142)
        );
        for width in [20usize, 40, 80, 113] {
            let block = message_block_for("[12:00:00] bob:", "", &hostile, Some(width));
            let lines: Vec<&str> = block.lines().collect();
            assert_eq!(lines[0], "[12:00:00] bob:");
            for l in &lines[1..] {
                assert!(l.starts_with(CONTINUATION), "{l:?}");
                assert!(width_of(l) <= width, "{l:?} wider than {width}");
            }
            let joined: String = lines[1..]
                .iter()
                .map(|l| &l[CONTINUATION.len()..])
                .collect();
            assert_eq!(joined, hostile);
        }
        // Wide characters count two columns.
        let block = message_block_for("[t] b:", "  ", &"你".repeat(50), Some(30));
        assert!(block.lines().all(|l| width_of(l) <= 30));
        // A short message stays on the header line; without a terminal nothing wraps.
        assert_eq!(message_block_for("[t] b:", "", "hi", Some(80)), "[t] b: hi");
        let long = "y".repeat(500);
        assert_eq!(
            message_block_for("[t] b:", "", &long, None),
            format!("[t] b: {long}")
        );
    }

    #[test]
    fn escape_lines_keeps_newlines_only() {
        assert_eq!(escape_lines("a\x1b[2J\nb\u{202e}"), "a\\x1b[2J\nb\\u{202e}");
    }
}
