//! Keeping addresses, hashes and signatures out of messages.

/// Replaces every `0x`-prefixed hex run of 8+ digits with `0x…`.
pub fn redact_hex(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'0' && bytes.get(i + 1).is_some_and(|b| *b == b'x' || *b == b'X') {
            let run = bytes[i + 2..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            if run >= 8 {
                out.push_str("0x…");
                i += 2 + run;
                continue;
            }
        }
        let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + ch_len]);
        i += ch_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_hex;

    #[test]
    fn long_hex_is_hidden_short_hex_and_text_stay() {
        assert_eq!(
            redact_hex("sender 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266 paid 0x10 — ok"),
            "sender 0x… paid 0x10 — ok"
        );
        assert_eq!(redact_hex("no hex here"), "no hex here");
    }
}
