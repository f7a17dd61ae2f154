//! Reading an audio file's duration from its bytes (WAV and MP3), to price
//! a transcription before it runs.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    #[error("the audio format is not recognised (supported: WAV, MP3)")]
    UnknownFormat,
    #[error("the {0} file is truncated or malformed")]
    Malformed(&'static str),
}

/// Duration in seconds.
pub fn duration_secs(bytes: &[u8]) -> Result<f64, AudioError> {
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE" {
        return wav(bytes);
    }
    mp3(bytes)
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn wav(bytes: &[u8]) -> Result<f64, AudioError> {
    let malformed = AudioError::Malformed("WAV");
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = le_u32(&bytes[at + 4..at + 8]) as usize;
        let body = at + 8;
        match id {
            b"fmt " => {
                let fmt = bytes.get(body..body + 16).ok_or(malformed.clone())?;
                byte_rate = Some(le_u32(&fmt[8..12]));
            }
            b"data" => {
                let rate = byte_rate.filter(|r| *r > 0).ok_or(malformed)?;
                // A streaming writer may leave the size at its maximum.
                let available = bytes.len() - body;
                let data = if size == u32::MAX as usize {
                    available
                } else {
                    size.min(available)
                };
                return Ok(data as f64 / f64::from(rate));
            }
            _ => {}
        }
        at = body + size + (size & 1);
    }
    Err(malformed)
}

/// Walks MPEG audio Layer III frames, summing their durations.
fn mp3(bytes: &[u8]) -> Result<f64, AudioError> {
    let mut at = 0;
    if bytes.len() >= 10 && &bytes[..3] == b"ID3" {
        let size = bytes[6..10]
            .iter()
            .fold(0usize, |acc, b| (acc << 7) | usize::from(b & 0x7f));
        at = 10 + size;
    }
    let mut seconds = 0.0;
    let mut frames = 0u32;
    while at + 4 <= bytes.len() {
        let Some((length, duration)) = mp3_frame(&bytes[at..at + 4]) else {
            break;
        };
        seconds += duration;
        frames += 1;
        at += length;
    }
    match frames {
        0 => Err(AudioError::UnknownFormat),
        _ => Ok(seconds),
    }
}

/// `(frame length in bytes, seconds)` for a Layer III frame header.
fn mp3_frame(header: &[u8]) -> Option<(usize, f64)> {
    const BITRATES_V1: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const BITRATES_V2: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    if header[0] != 0xFF || header[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (header[1] >> 3) & 0b11; // 0: 2.5, 2: 2, 3: 1
    let layer = (header[1] >> 1) & 0b11; // 1: Layer III
    if version == 1 || layer != 1 {
        return None;
    }
    let bitrate_index = usize::from(header[2] >> 4);
    let rate_index = usize::from((header[2] >> 2) & 0b11);
    if bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    let padding = usize::from((header[2] >> 1) & 1);
    let mpeg1 = version == 3;
    let kbps = if mpeg1 { BITRATES_V1 } else { BITRATES_V2 }[bitrate_index];
    let base_rate = [44_100, 48_000, 32_000][rate_index];
    let sample_rate = match version {
        3 => base_rate,
        2 => base_rate / 2,
        _ => base_rate / 4,
    };
    let (samples, factor) = if mpeg1 { (1152, 144) } else { (576, 72) };
    let length = (factor * kbps as usize * 1000) / sample_rate as usize + padding;
    Some((length, f64::from(samples) / f64::from(sample_rate)))
}

/// A PCM WAV file of `seconds` of silence (8 kHz, 16-bit mono).
pub fn silent_wav(seconds: f64) -> Vec<u8> {
    let rate = 8_000u32;
    let data_len = (f64::from(rate) * seconds) as u32 * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.resize(44 + data_len as usize, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_duration_comes_from_the_data_chunk() {
        let wav = silent_wav(2.5);
        assert!((duration_secs(&wav).unwrap() - 2.5).abs() < 1e-9);
        assert_eq!(duration_secs(&wav[..30]), Err(AudioError::Malformed("WAV")));
    }

    #[test]
    fn mp3_duration_sums_frames_after_an_id3_tag() {
        // MPEG-1 Layer III, 128 kbps, 44.1 kHz: 417-byte frames of 1152 samples.
        let mut frame = vec![0u8; 417];
        frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x00]);
        let mut mp3 = b"ID3\x04\x00\x00\x00\x00\x00\x05hello".to_vec();
        for _ in 0..100 {
            mp3.extend_from_slice(&frame);
        }
        let expected = 100.0 * 1152.0 / 44_100.0;
        assert!((duration_secs(&mp3).unwrap() - expected).abs() < 1e-9);
    }

    #[test]
    fn other_bytes_are_refused() {
        assert_eq!(
            duration_secs(b"not audio at all"),
            Err(AudioError::UnknownFormat)
        );
        assert_eq!(duration_secs(b""), Err(AudioError::UnknownFormat));
    }
}
