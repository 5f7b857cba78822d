//! The deterministic byte stream every throughput run sends, so the receiver can check every
//! byte it gets: loss, duplication, reordering, corruption and cross-stream mix-ups all show.
//!
//! Byte `i` of the stream with seed `s` is `table[i % PERIOD]`, the table being filled once
//! from a splitmix64 sequence of `s`. Producing a chunk is then a slice, and checking one a
//! `memcmp`: the load generator must cost far less than the proxy it measures. `PERIOD` is
//! prime so a slip by any power-of-two buffer size cannot line the stream up with itself.
//! Each stream gets its own seed, so bytes delivered to the wrong stream fail the check.

/// Length of the repeating table: a prime near 256 KiB.
pub const PERIOD: usize = 262_139;
/// Largest chunk [`Pattern::chunk`] hands out (and the read size callers use).
pub const MAX_CHUNK: usize = 64 * 1024;

/// One stream's bytes: the table plus a copy of its first `MAX_CHUNK` bytes after the end,
/// so any chunk starting anywhere in the period is one contiguous slice.
pub struct Pattern {
    table: Vec<u8>,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        let mut state = seed;
        let mut table = Vec::with_capacity(PERIOD + MAX_CHUNK);
        while table.len() < PERIOD {
            table.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
        }
        table.truncate(PERIOD);
        table.extend_from_within(..MAX_CHUNK);
        Pattern { table }
    }

    /// The `len` bytes (at most [`MAX_CHUNK`]) of the stream starting at `offset`.
    pub fn chunk(&self, offset: u64, len: usize) -> &[u8] {
        let start = (offset % PERIOD as u64) as usize;
        &self.table[start..start + len.min(MAX_CHUNK)]
    }

    /// Whether `data` is exactly the stream's bytes starting at `offset`.
    pub fn verify(&self, offset: u64, data: &[u8]) -> bool {
        let mut at = offset;
        data.chunks(MAX_CHUNK).all(|part| {
            let ok = part == self.chunk(at, part.len());
            at += part.len() as u64;
            ok
        })
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, and good enough that no two seeds' tables
/// share a useful stretch.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_wrap_and_verify() {
        let p = Pattern::new(7);
        let mut stream = Vec::new();
        let mut at = 0u64;
        while stream.len() < 3 * PERIOD {
            let c = p.chunk(at, 40_000);
            stream.extend_from_slice(c);
            at += c.len() as u64;
        }
        assert!(p.verify(0, &stream));
        assert!(p.verify(12_345, &stream[12_345..200_000]));
        assert_eq!(&stream[..100], &stream[PERIOD..PERIOD + 100]);
        let mut bad = stream[..100_000].to_vec();
        bad[99_999] ^= 1;
        assert!(!p.verify(0, &bad));
        assert!(!p.verify(1, &stream[..1000]), "a one-byte slip is caught");
        assert!(!Pattern::new(8).verify(0, &stream[..1000]), "another stream's bytes are caught");
    }
}
