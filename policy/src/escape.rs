//! Text from clients is echoed in headers, 403 bodies and log lines. This is the one function that
//! makes it safe to echo: no CR/LF, no control characters, no bidi overrides, no zero-width
//! characters (which could forge log lines or hide text from the person reading them).

use std::borrow::Cow;

/// `text` with every unsafe character replaced by a visible `\u{XXXX}` escape.
pub fn escape_untrusted(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match is_unsafe(c) {
            true => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            false => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_or_hide_text() {
        assert_eq!(escape_untrusted("example.com"), "example.com");
        assert!(matches!(escape_untrusted("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_untrusted("a\r\nb"), "a\\u{000d}\\u{000a}b");
        assert_eq!(escape_untrusted("x\0y"), "x\\u{0000}y");
        assert_eq!(escape_untrusted("evil\u{202e}txt"), "evil\\u{202e}txt");
        assert_eq!(escape_untrusted("zero\u{200b}width"), "zero\\u{200b}width");
        assert_eq!(escape_untrusted("bom\u{feff}"), "bom\\u{feff}");
        assert_eq!(escape_untrusted("del\u{7f}"), "del\\u{007f}");
        assert_eq!(escape_untrusted("café"), "café");
    }
}
