//! Image dimensions from the first bytes of an inline (base64) image, to
//! price Claude image inputs by size instead of at their worst case.

/// Base64 characters decoded at most: enough for PNG, GIF and WebP headers
/// and for JPEG frame headers behind a typical EXIF block.
const MAX_PREFIX_CHARS: usize = 96 * 1024;

/// `(width, height)` of a PNG, GIF, JPEG or WebP image given as base64.
pub fn base64_dimensions(data: &str) -> Option<(u32, u32)> {
    dimensions(&decode_prefix(data))
}

/// `(width, height)` of a `data:image/…;base64,…` URL's image.
pub fn data_url_dimensions(url: &str) -> Option<(u32, u32)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    meta.ends_with(";base64").then(|| base64_dimensions(data))?
}

/// Tokens Claude bills for an image of `dimensions` (`None`: unknown), never
/// above `cap`, the most one image can cost once Anthropic has scaled it
/// down. The larger of Anthropic's two published rules (`w × h / 750`, and
/// one token per 28 × 28 px patch) is used.
pub fn claude_image_tokens(dimensions: Option<(u32, u32)>, cap: u64) -> u64 {
    let Some((w, h)) = dimensions else {
        return cap;
    };
    let (w, h) = (u64::from(w), u64::from(h));
    let by_area = (w * h).div_ceil(750);
    let by_patch = w.div_ceil(28) * h.div_ceil(28);
    by_area.max(by_patch).min(cap)
}

fn decode_prefix(data: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in data.bytes().take(MAX_PREFIX_CHARS) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'\r' | b'\n' | b' ' | b'\t' => continue,
            _ => break,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

fn le16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

fn le24(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        0,
    ]))
}

fn dimensions(b: &[u8]) -> Option<(u32, u32)> {
    let size = if b.starts_with(b"\x89PNG\r\n\x1a\n") && b.get(12..16) == Some(b"IHDR") {
        let w = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
        let h = u32::from_be_bytes(b.get(20..24)?.try_into().ok()?);
        (w, h)
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        (le16(b, 6)?, le16(b, 8)?)
    } else if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        webp(b)?
    } else if b.starts_with(&[0xff, 0xd8]) {
        jpeg(b)?
    } else {
        return None;
    };
    (size.0 > 0 && size.1 > 0).then_some(size)
}

fn webp(b: &[u8]) -> Option<(u32, u32)> {
    match b.get(12..16)? {
        b"VP8 " => {
            (b.get(23..26)? == [0x9d, 0x01, 0x2a]).then_some(())?;
            Some((le16(b, 26)? & 0x3fff, le16(b, 28)? & 0x3fff))
        }
        b"VP8L" => {
            (*b.get(20)? == 0x2f).then_some(())?;
            let bits = u32::from_le_bytes(b.get(21..25)?.try_into().ok()?);
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        b"VP8X" => Some((le24(b, 24)? + 1, le24(b, 27)? + 1)),
        _ => None,
    }
}

/// Walks JPEG segments up to the first frame header (SOFn).
fn jpeg(b: &[u8]) -> Option<(u32, u32)> {
    let mut at = 2;
    loop {
        if *b.get(at)? != 0xff {
            return None;
        }
        let marker = *b.get(at + 1)?;
        match marker {
            0xff => at += 1,
            0x01 | 0xd0..=0xd8 => at += 2,
            0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                return Some((be16(b, at + 7)?, be16(b, at + 5)?));
            }
            0xda | 0xd9 => return None,
            _ => at += 2 + be16(b, at + 2)? as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn reads_headers_of_common_formats() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&1000u32.to_be_bytes());
        png.extend_from_slice(&500u32.to_be_bytes());
        png.extend_from_slice(&[8, 6, 0, 0, 0]);
        assert_eq!(base64_dimensions(&b64(&png)), Some((1000, 500)));
        assert_eq!(
            data_url_dimensions(&format!("data:image/png;base64,{}", b64(&png))),
            Some((1000, 500))
        );

        let gif = b"GIF89a\x40\x01\xf0\x00\x00\x00\x00";
        assert_eq!(base64_dimensions(&b64(gif)), Some((320, 240)));

        // SOI, an APP0 segment, then SOF0 with height 480, width 640.
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00];
        jpeg.extend_from_slice(&[0xff, 0xc0, 0x00, 0x11, 0x08, 0x01, 0xe0, 0x02, 0x80, 0x03]);
        assert_eq!(base64_dimensions(&b64(&jpeg)), Some((640, 480)));

        let mut webp = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        webp.extend_from_slice(&[0x1f, 0x03, 0x00, 0xdf, 0x01, 0x00]); // 800 × 480
        assert_eq!(base64_dimensions(&b64(&webp)), Some((800, 480)));

        assert_eq!(base64_dimensions("not an image"), None);
        assert_eq!(data_url_dimensions("https://example.com/a.png"), None);
    }

    #[test]
    fn claude_tokens_follow_size_up_to_the_cap() {
        // 200 × 200: max(⌈40000/750⌉ = 54, 8 × 8 = 64).
        assert_eq!(claude_image_tokens(Some((200, 200)), 1600), 64);
        assert_eq!(claude_image_tokens(Some((4000, 3000)), 1600), 1600);
        assert_eq!(claude_image_tokens(None, 4784), 4784);
    }
}
