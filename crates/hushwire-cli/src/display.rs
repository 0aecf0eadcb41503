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

use core::fmt::Write as _;

/// The prefix of every continuation line of a multi-line message. Header lines start with `[`
/// (or with the record's own indent), never with this.
pub const CONTINUATION: &str = "    | ";

/// Whether `c` must not reach a terminal as itself.
///
/// - C0 controls U+0000–U+001F (escape, bell, backspace, carriage return, newline, tab, …)
///   and DEL U+007F;
/// - C1 controls U+0080–U+009F (U+009B is a one-byte CSI on some terminals);
/// - bidirectional controls and format characters that reorder or hide text: U+061C, U+180E,
///   U+200B–U+200F, U+2028–U+202E, U+2060–U+2064, U+2066–U+206F, U+FEFF, U+FFF9–U+FFFB, and
///   the tag characters U+E0000–U+E007F;
/// - the soft hyphen U+00AD, invisible in most fonts.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{ad}'
        | '\u{61c}'
        | '\u{180e}'
        | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206f}'
        | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}'
        | '\u{e0000}'..='\u{e007f}')
}

/// One line of untrusted text, safe to print: every character [`is_unsafe`] names is replaced
/// by a visible escape (`\x1b` for C0 controls and DEL, `\u{202e}` for the others). Newlines
/// are escaped too: use this for names, reasons and anything that must stay on one line.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if u32::from(c) < 0x80 {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    out
}

/// A message under a header: `header text` when the text is one line, else the header alone
/// followed by each line of the text on its own line, prefixed with `indent` and
/// [`CONTINUATION`]. Lines split at `\n` (a `\r` before it is dropped); everything else unsafe
/// is escaped, so no line of the text can pass for a header, and the block ends where it seems
/// to end.
pub fn message_block(header: &str, indent: &str, text: &str) -> String {
    let text = text.strip_suffix('\n').unwrap_or(text);
    if !text.contains('\n') {
        return format!("{header} {}", escape(text));
    }
    let mut out = header.to_owned();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        out.push('\n');
        out.push_str(indent);
        out.push_str(CONTINUATION);
        out.push_str(&escape(line));
    }
    out
}

/// Text made of lines the program wrote around untrusted parts (an error message): each line
/// is escaped, the newlines between them kept.
pub fn escape_lines(text: &str) -> String {
    text.split('\n').map(escape).collect::<Vec<_>>().join("\n")
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
    fn escape_lines_keeps_newlines_only() {
        assert_eq!(escape_lines("a\x1b[2J\nb\u{202e}"), "a\\x1b[2J\nb\\u{202e}");
    }
}
