//! G.711 (PCMU/PCMA) encoding of the audio a stream plays: a generated tone, or a WAV file's
//! samples. Encoded once at the start of a run; streams then loop over the bytes.

use anyhow::{anyhow, bail, Context as _};
use std::path::Path;

/// The two G.711 laws, as RTP's static payload types name them (RFC 3551).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }
    /// RTP timestamp units per second (RFC 3551: 8 kHz for both laws).
    pub fn clock_rate(self) -> u32 {
        8000
    }
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
    pub fn encode(self, pcm: &[i16]) -> Vec<u8> {
        match self {
            Codec::Pcmu => pcm.iter().map(|&s| ulaw(s)).collect(),
            Codec::Pcma => pcm.iter().map(|&s| alaw(s)).collect(),
        }
    }
}

/// μ-law (G.711 §2, the segment/quantisation of the ITU reference code).
pub fn ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    let mag = s.abs().min(CLIP) + BIAS;
    let exp = (31 - (mag as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mant = (mag >> (exp + 3)) & 0x0f;
    !(sign | (exp << 4) as u8 | mant as u8)
}

/// A-law (G.711 §3).
pub fn alaw(sample: i16) -> u8 {
    let s = i32::from(sample) >> 3; // 13-bit
    let (sign, mag) = if s >= 0 { (0x80, s) } else { (0, -s - 1) };
    let mag = mag.min(0x0fff);
    let out = if mag < 32 {
        (mag >> 1) as u8
    } else {
        let exp = 31 - (mag as u32).leading_zeros() as i32 - 4; // 1..=7
        ((exp << 4) as u8) | ((mag >> exp) & 0x0f) as u8
    };
    (sign | out) ^ 0x55
}

/// One second of a `hz` tone at 8 kHz, at -10 dBFS or so: what a stream plays when no file is
/// given. A whole second, so every frame length divides it.
pub fn tone(hz: f64) -> Vec<i16> {
    (0..8000)
        .map(|i| (10_000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()) as i16)
        .collect()
}

/// The samples of a WAV file that is 8 kHz, mono, 16-bit PCM (the format telephony prompts
/// come in); anything else is refused with what it is and what is wanted.
pub fn read_wav(path: &Path) -> anyhow::Result<Vec<i16>> {
    let flag = || format!("--media-file {}", path.display());
    let b = std::fs::read(path).with_context(flag)?;
    wav_samples(&b).with_context(flag)
}

fn wav_samples(b: &[u8]) -> anyhow::Result<Vec<i16>> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        bail!("not a WAV file (no RIFF/WAVE header)");
    }
    let mut at = 12;
    let mut format = None;
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let len = u32::from_le_bytes([b[at + 4], b[at + 5], b[at + 6], b[at + 7]]) as usize;
        let body = b
            .get(at + 8..at + 8 + len)
            .context("a chunk runs past the file's end")?;
        match id {
            b"fmt " if len >= 16 => {
                let u16at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                format = Some((u16at(0), u16at(2), rate, u16at(14)));
            }
            b"data" => {
                return match format {
                    Some((1, 1, 8000, 16)) => Ok(body
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect()),
                    Some((fmt, ch, rate, bits)) => Err(anyhow!(
                        "format {fmt}, {ch} channel(s), {rate} Hz, {bits} bits; wanted PCM (1), \
                         mono, 8000 Hz, 16 bits (sox in.wav -r 8000 -c 1 -b 16 out.wav)"
                    )),
                    None => Err(anyhow!("no fmt chunk before the data")),
                };
            }
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    Err(anyhow!("no data chunk"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_g711_code_words() {
        // G.711's tables: silence, full scale, and a mid value of each law.
        assert_eq!(ulaw(0), 0xff);
        assert_eq!(ulaw(-1), 0x7f);
        assert_eq!(ulaw(32767), 0x80);
        assert_eq!(ulaw(-32768), 0x00);
        assert_eq!(ulaw(1000), 0xce);
        assert_eq!(alaw(0), 0xd5);
        assert_eq!(alaw(-8), 0x55);
        assert_eq!(alaw(32767), 0xaa);
        assert_eq!(alaw(-32768), 0x2a);
        assert_eq!(alaw(1000), 0xfa);
    }

    #[test]
    fn a_wav_is_read_or_refused_by_name() {
        let mut w = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0".to_vec();
        w.extend_from_slice(&[1, 0, 1, 0, 0x40, 0x1f, 0, 0, 0x80, 0x3e, 0, 0, 2, 0, 16, 0]);
        w.extend_from_slice(b"data\x04\0\0\0");
        w.extend_from_slice(&[0xe8, 0x03, 0x18, 0xfc]);
        assert_eq!(wav_samples(&w).unwrap(), vec![1000, -1000]);
        w[24] = 0x44; // 44.1 kHz-ish
        w[25] = 0xac;
        assert!(wav_samples(&w)
            .unwrap_err()
            .to_string()
            .contains("wanted PCM (1), mono, 8000 Hz"));
        assert!(wav_samples(b"RIFX")
            .unwrap_err()
            .to_string()
            .contains("not a WAV"));
    }
}
