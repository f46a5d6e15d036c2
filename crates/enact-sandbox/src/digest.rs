//! Content hashes and random names: the one home for SHA-256-as-hex and for OS randomness
//! (workspaces, graders and environments all fingerprint files and frame output this way).

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use crate::SandboxError;

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    to_hex(&Sha256::digest(data))
}

/// SHA-256 of everything `reader` yields, lower-case hex (streamed: files of any size).
pub fn sha256_hex_reader(mut reader: impl Read) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(to_hex(&h.finalize()))
}

/// `bytes` random bytes from the operating system, as hex: for markers, canaries and names
/// that a sandboxed program must not be able to predict. There is no weaker fallback: a
/// host without a random source gets an error, never a guessable value.
pub fn random_hex(bytes: usize) -> Result<String, SandboxError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| {
        SandboxError::io(
            "reading random bytes from the operating system (getrandom(2) / /dev/urandom)",
            io::Error::other(e),
        )
    })?;
    Ok(to_hex(&buf))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sha256_matches_the_standard_vectors() {
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256_hex(b""), empty);
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Streaming over more than one buffer gives the same digest.
        let big = vec![7u8; 600 * 1024];
        assert_eq!(sha256_hex_reader(&big[..]).unwrap(), sha256_hex(&big));
        assert_eq!(sha256_hex_reader(&b""[..]).unwrap(), empty);
    }

    #[test]
    fn random_hex_has_the_length_asked_and_does_not_repeat() {
        let a = random_hex(16).unwrap();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, random_hex(16).unwrap());
        assert_eq!(random_hex(0).unwrap(), "");
    }
}
