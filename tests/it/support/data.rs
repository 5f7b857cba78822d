//! A deterministic byte stream ([`DataGen`]) and its [`Verifier`]: what one side writes, the
//! other regenerates and compares, so every byte through the proxy is checked.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// xorshift64 stream, produced in little-endian 8-byte words; any chunking of reads or writes
/// yields the same byte sequence for a seed.
pub struct DataGen {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl DataGen {
    pub fn new(seed: u64) -> DataGen {
        // xorshift must never have state 0; mix the seed so small seeds still look random.
        let state = (seed ^ 0x9E37_79B9_7F4A_7C15).max(1);
        DataGen { state, word: [0; 8], used: 8 }
    }

    fn next_word(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        // Finish a partly used word first, then whole words, then start a new one.
        while self.used < 8 && i < buf.len() {
            buf[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        let mut words = buf[i..].chunks_exact_mut(8);
        for chunk in &mut words {
            chunk.copy_from_slice(&self.next_word().to_le_bytes());
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            self.word = self.next_word().to_le_bytes();
            let n = tail.len();
            tail.copy_from_slice(&self.word[..n]);
            self.used = n;
        }
    }

    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        DataGen::new(seed).fill(&mut out);
        out
    }
}

/// Checks received bytes against a regenerated stream.
pub struct Verifier {
    generator: DataGen,
    scratch: Vec<u8>,
    pub offset: u64,
}

impl Verifier {
    pub fn new(seed: u64) -> Verifier {
        Verifier { generator: DataGen::new(seed), scratch: Vec::new(), offset: 0 }
    }

    pub fn check(&mut self, data: &[u8]) -> Result<(), String> {
        self.scratch.resize(data.len(), 0);
        self.generator.fill(&mut self.scratch);
        if let Some(i) = data.iter().zip(&self.scratch).position(|(a, b)| a != b) {
            return Err(format!("stream corrupt at byte {}", self.offset + i as u64));
        }
        self.offset += data.len() as u64;
        Ok(())
    }
}

/// Write `len` bytes of stream `seed` in 64 KiB chunks.
pub fn write_stream(stream: &mut impl Write, seed: u64, len: usize) -> io::Result<()> {
    write_stream_counting(stream, seed, len, &AtomicU64::new(0))
}

/// [`write_stream`], adding each chunk to `written` once the write has taken it.
pub fn write_stream_counting(
    stream: &mut impl Write,
    seed: u64,
    len: usize,
    written: &AtomicU64,
) -> io::Result<()> {
    let mut generator = DataGen::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        generator.fill(&mut buf[..n]);
        stream.write_all(&buf[..n])?;
        written.fetch_add(n as u64, Ordering::SeqCst);
        left -= n;
    }
    Ok(())
}

/// Read until EOF, verifying stream `seed`; the number of bytes read.
pub fn read_and_verify(stream: &mut impl Read, seed: u64) -> Result<u64, String> {
    let mut verifier = Verifier::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(verifier.offset),
            Ok(n) => verifier.check(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read failed after {} bytes: {e}", verifier.offset)),
        }
    }
}

/// Read until the stream ends by EOF or a reset, verifying what arrives is a prefix of stream
/// `seed`; the number of bytes read. Any other error (a timeout: the relay hangs) panics.
pub fn read_verified_prefix(stream: &mut impl Read, seed: u64) -> u64 {
    let mut verifier = Verifier::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return verifier.offset,
            Ok(n) => verifier.check(&buf[..n]).unwrap(),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return verifier.offset,
            Err(e) => panic!("the stream hangs instead of ending ({} bytes read): {e}", verifier.offset),
        }
    }
}

/// A slow reader of `source`'s stream: 1 KiB reads with 10 ms pauses, each checked by
/// `verifier`, while the source writes flat out; `sample` runs after every 20th read.
///
/// It reads for at least a second and until backpressure has reached the source (its writes
/// took less than 1 MiB in the last 200 ms while it had bytes left to send), so whatever the
/// buffers on the way can hold is full when it stops, however slow the machine; at most
/// 2,000 reads or 20 s. Returns whether the source was held back.
pub fn read_slowly(
    stream: &mut impl Read,
    verifier: &mut Verifier,
    source: &SourceTarget,
    mut sample: impl FnMut(),
) -> bool {
    const WINDOW: Duration = Duration::from_millis(200);
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    let mut mark = (start, source.written());
    let mut reads = 0u32;
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "early EOF");
        verifier.check(&buf[..n]).unwrap();
        reads += 1;
        thread::sleep(Duration::from_millis(10));
        if reads.is_multiple_of(20) {
            sample();
        }
        let now = Instant::now();
        if now.duration_since(mark.0) >= WINDOW {
            let written = source.written();
            let held_back = written < source.len as u64 && written - mark.1 < MIB as u64;
            if held_back && now.duration_since(start) >= Duration::from_secs(1) {
                return true;
            }
            mark = (now, written);
        }
        if reads >= 2000 || now.duration_since(start) >= Duration::from_secs(20) {
            return false;
        }
    }
}

/// Read the rest of the stream at full speed, checked by `verifier`; `sample` runs after every
/// 256th read and once at the end.
pub fn read_rest(stream: &mut impl Read, verifier: &mut Verifier, mut sample: impl FnMut()) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut reads = 0u64;
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        verifier.check(&buf[..n]).unwrap();
        reads += 1;
        if reads.is_multiple_of(256) {
            sample();
        }
    }
    sample();
}

/// How a [`push`] ended.
#[derive(Debug)]
pub enum Pushed {
    /// A write took nothing before the socket's write timeout: the path is full.
    Blocked,
    /// `limit` bytes went out without either of the others happening.
    Limit,
    /// A write failed (the proxy closed on us: EPIPE, ECONNRESET).
    Failed(io::Error),
}

/// Write `chunk` again and again until `limit` bytes are written, a write blocks for the
/// socket's write timeout, or a write fails; `each` runs after every 16th chunk. The bytes
/// written, and how it ended.
pub fn push(stream: &mut TcpStream, chunk: &[u8], limit: usize, mut each: impl FnMut()) -> (usize, Pushed) {
    let mut written = 0usize;
    loop {
        if written >= limit {
            return (written, Pushed::Limit);
        }
        match stream.write(chunk) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return (written, Pushed::Blocked);
            }
            Err(e) => return (written, Pushed::Failed(e)),
        }
        if (written / chunk.len()).is_multiple_of(16) {
            each();
        }
    }
}

/// FNV-1a 64: a cheap checksum to compare two byte sequences.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[test]
fn data_gen_is_independent_of_chunking() {
    let whole = DataGen::bytes(7, 1000);
    let mut generator = DataGen::new(7);
    let mut pieces = Vec::new();
    for size in [1, 3, 8, 13, 5, 64, 906] {
        let mut buf = vec![0u8; size];
        generator.fill(&mut buf);
        pieces.extend_from_slice(&buf);
    }
    assert_eq!(pieces, whole);
    let mut verifier = Verifier::new(7);
    verifier.check(&whole[..5]).unwrap();
    verifier.check(&whole[5..]).unwrap();
    assert!(Verifier::new(8).check(&whole).is_err());
    assert_ne!(checksum(&whole), checksum(&DataGen::bytes(8, 1000)));
}
