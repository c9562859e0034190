//! Strict base64url for token segments (RFC 7515 §2): the URL-safe alphabet, no padding, no
//! whitespace, zero trailing bits. Anything else is refused, so one token has one reading.
//!
//! Why base64-simd and not the `base64` crate used elsewhere in the workspace: decoding the header
//! and payload was 13 % of the work outside the signature check (perf, about 0.55 µs for an
//! ordinary access token); base64-simd decodes with SSSE3/AVX2 chosen at run time. Its strict
//! (non-forgiving) decoder has the same verdicts as `base64`'s `URL_SAFE_NO_PAD`, which
//! `tests::same_verdicts_as_the_base64_crate` checks over valid, mutated and random inputs.

use base64_simd::{AsOut as _, URL_SAFE_NO_PAD};

/// Why [`decode_into`] gave no bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotDecoded {
    /// Longer than the buffer (judged by length, before the content is read).
    TooLong,
    /// Not strict base64url.
    Invalid,
}

/// Decode a segment into `buf` when it fits.
pub(crate) fn decode_into<'b>(segment: &str, buf: &'b mut [u8]) -> Result<&'b [u8], NotDecoded> {
    let src = segment.as_bytes();
    let len = URL_SAFE_NO_PAD
        .decoded_length(src)
        .map_err(|_| NotDecoded::Invalid)?;
    let Some(out) = buf.get_mut(..len) else {
        return Err(NotDecoded::TooLong);
    };
    URL_SAFE_NO_PAD
        .decode(src, out.as_out())
        .map(|decoded| &*decoded)
        .map_err(|_| NotDecoded::Invalid)
}

/// Decode a segment; `None`: not strict base64url.
pub(crate) fn decode(segment: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode_to_vec(segment.as_bytes()).ok()
}

/// Whether a segment is strict base64url, without decoding it.
pub(crate) fn is_valid(segment: &str) -> bool {
    URL_SAFE_NO_PAD.check(segment.as_bytes()).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as REFERENCE;
    use base64::Engine as _;
    use rand::{Rng, SeedableRng};

    fn verdicts_agree(s: &str) {
        let want = REFERENCE.decode(s).ok();
        assert_eq!(super::decode(s), want, "decode {s:?}");
        assert_eq!(super::is_valid(s), want.is_some(), "check {s:?}");
        let mut small = [0u8; 16];
        match super::decode_into(s, &mut small) {
            Ok(out) => assert_eq!(Some(out.to_vec()), want, "decode_into {s:?}"),
            // Too long is told by the length alone (the caller then decodes onto the heap).
            Err(super::NotDecoded::TooLong) => assert!(s.len() * 3 / 4 > 16, "{s:?}"),
            Err(super::NotDecoded::Invalid) => assert!(want.is_none(), "refused {s:?}"),
        }
    }

    #[test]
    fn same_verdicts_as_the_base64_crate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let hostile = b"=+/ \t\r\n.%\0\xc3";
        for _ in 0..20_000 {
            let len = rng.gen_range(0..80);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let mut text = REFERENCE.encode(&bytes).into_bytes();
            match rng.gen_range(0..4) {
                0 => {}
                1 if !text.is_empty() => {
                    let i = rng.gen_range(0..text.len());
                    text[i] = alphabet[rng.gen_range(0..64)];
                }
                2 if !text.is_empty() => {
                    let i = rng.gen_range(0..text.len());
                    text[i] = hostile[rng.gen_range(0..hostile.len() - 1)];
                }
                _ => text.push(alphabet[rng.gen_range(0..64)]),
            }
            verdicts_agree(std::str::from_utf8(&text).unwrap());
        }
        for s in [
            "", "A", "QQ", "QR", "QUE", "QUF", "QUFB", "QQ==", "QQ=", "Q Q", "-_-_", "+/+/",
        ] {
            verdicts_agree(s);
        }
    }
}
