//! SHA-256 digests as lower-case hex: map sources' checksums, the audit
//! log's hash chain, the install manifest.

use std::{io, io::Read};

use sha2::{Digest, Sha256};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    encode(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

fn encode(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of `bytes`, without allocating (the audit log
/// hashes every line it writes).
pub fn sha256_hex_array(bytes: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    encode(&Sha256::digest(bytes), &mut out);
    out
}

/// Lower-case hex SHA-256 of everything `reader` yields.
pub fn sha256_hex_of(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn sha256_of_abc() {
        assert_eq!(sha256_hex(b"abc"), ABC);
        assert_eq!(&sha256_hex_array(b"abc")[..], ABC.as_bytes());
        assert_eq!(sha256_hex_of(&b"abc"[..]).unwrap(), ABC);
        assert_eq!(hex(&[0, 0xff, 0x1a]), "00ff1a");
    }
}
