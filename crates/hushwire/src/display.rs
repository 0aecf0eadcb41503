//! Untrusted text shown as text: every message text, contact name and relay-supplied reason
//! that a human-readable output prints (the CLI's terminal lines, the browser console's text
//! export of an archive) goes through this module, so that nothing a contact writes can drive
//! a terminal (colours, titles, cursor moves, clearing the screen), reorder what is shown
//! (bidirectional overrides), hide text (zero-width characters) or imitate another line
//! (newlines, carriage returns). One function for both, so the browser's lines are the CLI's.
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

/// Whether `c` is a blank-looking character other than the ASCII space: a long run of them
/// pushes the rest of a message to the start of a terminal line, where it could pass for a
/// header. No-break and typographic spaces, the ideographic space, the Braille blank and the
/// Hangul fillers.
pub fn is_blank(c: char) -> bool {
    matches!(
        c,
        '\u{a0}' | '\u{115f}' | '\u{1160}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{2800}'
                | '\u{3000}'
                | '\u{3164}'
                | '\u{ffa0}'
    )
}

/// Runs of more than this many ASCII spaces are shown as a marker such as `[142 spaces]`.
pub const MAX_SPACES: usize = 3;

/// One line of untrusted text, safe to print: every character [`is_unsafe`] or [`is_blank`]
/// names is replaced by a visible escape (`\x1b` for C0 controls and DEL, `\u{202e}` for the
/// others), and a run of more than [`MAX_SPACES`] spaces by a marker `[N spaces]`. Newlines
/// are escaped too: use this for names, reasons and anything that must stay on one line.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut spaces = 0usize;
    let flush = |out: &mut String, spaces: &mut usize| {
        if *spaces > MAX_SPACES {
            let _ = write!(out, "[{spaces} spaces]");
        } else {
            out.extend(core::iter::repeat_n(' ', *spaces));
        }
        *spaces = 0;
    };
    for c in text.chars() {
        if c == ' ' {
            spaces += 1;
            continue;
        }
        flush(&mut out, &mut spaces);
        if !is_unsafe(c) && !is_blank(c) {
            out.push(c);
        } else if u32::from(c) < 0x80 {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    flush(&mut out, &mut spaces);
    out
}

/// The number of terminal columns `c` takes: 2 for East Asian wide and fullwidth characters
/// and most emoji, else 1. An estimate on the wide side, so wrapping never overflows a line.
pub fn columns(c: char) -> usize {
    match u32::from(c) {
        0x1100..=0x115f
        | 0x2e80..=0x303e
        | 0x3041..=0xa4cf
        | 0xac00..=0xd7a3
        | 0xf900..=0xfaff
        | 0xfe30..=0xfe4f
        | 0xff00..=0xff60
        | 0xffe0..=0xffe6
        | 0x1f000..=0x1faff
        | 0x20000..=0x3fffd => 2,
        _ => 1,
    }
}

/// The number of terminal columns `s` takes ([`columns`] of each character).
pub fn width_of(s: &str) -> usize {
    s.chars().map(columns).sum()
}

/// Splits `line` into pieces at most `width` columns wide (at least one character each).
pub fn wrap(line: &str, width: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut piece = String::new();
    let mut used = 0;
    for c in line.chars() {
        let w = columns(c);
        if used + w > width && !piece.is_empty() {
            pieces.push(core::mem::take(&mut piece));
            used = 0;
        }
        piece.push(c);
        used += w;
    }
    if !piece.is_empty() || pieces.is_empty() {
        pieces.push(piece);
    }
    pieces
}

/// A message under a header: `header text` when the text is one line, else the header alone
/// followed by each line of the text on its own line, prefixed with `indent` and
/// [`CONTINUATION`]. Lines split at `\n` (a `\r` before it is dropped, one final `\n` too);
/// everything else unsafe is escaped, so no line of the text can pass for a header.
///
/// For a terminal `width` columns wide (`None`: no wrapping, as in a file), a message that
/// does not fit on the header line goes below it, and every line longer than the room after
/// `indent` and [`CONTINUATION`] is cut into pieces, each on its own continuation line: the
/// terminal never starts a line with untrusted text.
pub fn message_block_for(header: &str, indent: &str, text: &str, width: Option<usize>) -> String {
    let text = text.strip_suffix('\n').unwrap_or(text);
    if !text.contains('\n') {
        let one = format!("{header} {}", escape(text));
        if width.is_none_or(|w| width_of(&one) <= w) {
            return one;
        }
    }
    let room = width.map(|w| {
        w.saturating_sub(width_of(indent) + CONTINUATION.len())
            .max(8)
    });
    let mut out = header.to_owned();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let shown = escape(line);
        let pieces = match room {
            Some(room) => wrap(&shown, room),
            None => vec![shown],
        };
        for piece in pieces {
            out.push('\n');
            out.push_str(indent);
            out.push_str(CONTINUATION);
            out.push_str(&piece);
        }
    }
    out
}

/// Text made of lines the program wrote around untrusted parts (an error message): each line
/// is escaped, the newlines between them kept.
pub fn escape_lines(text: &str) -> String {
    text.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}
