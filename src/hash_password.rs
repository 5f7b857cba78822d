//! `socksloop hash-password`: read one password from standard input, print its argon2id PHC
//! string (for `password-hash` in a config file) and nothing else on standard output.
//!
//! The password is one line; the line's end (`\n` or `\r\n`) is not part of it. An empty
//! password, one longer than RFC 1929's 255 bytes (no client could send it), or no line at
//! all is refused with exit code 2. When standard input is a terminal, its echo is turned off
//! while the password is typed and a prompt goes to standard error, so neither the screen nor
//! standard output ever shows the password. Piped input gets no prompt:
//! `printf '%s\n' "$PASSWORD" | socksloop hash-password`.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;

use zeroize::Zeroizing;

/// Run the subcommand; the process's exit code.
pub fn run() -> ExitCode {
    let stdin = io::stdin();
    let password = if stdin.is_terminal() {
        eprint!("Password (not echoed): ");
        let _ = io::stderr().flush();
        let echo = EchoOff::new();
        let line = read_line(&mut stdin.lock());
        drop(echo);
        eprintln!();
        line
    } else {
        read_line(&mut stdin.lock())
    };
    let password = match password {
        Ok(password) => password,
        Err(e) => {
            eprintln!("socksloop: error: {e}");
            return ExitCode::from(2);
        }
    };
    match socksloop::verifier::hash_password(&password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("socksloop: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line of at most 255 bytes, without its line end; never empty.
fn read_line(input: &mut impl BufRead) -> Result<Zeroizing<Vec<u8>>, String> {
    const MAX: usize = socksloop::users::MAX_FIELD;
    let mut line = Zeroizing::new(Vec::with_capacity(MAX + 2));
    // Read a little past the limit, so a longer line is seen as too long and not cut.
    input
        .take(MAX as u64 + 3)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.is_empty() {
        return Err("no password: give it on standard input, one line (it may not be empty)".into());
    }
    if line.len() > MAX {
        return Err(format!("the password is longer than {MAX} bytes (RFC 1929's limit)"));
    }
    Ok(line)
}

/// Terminal echo off on standard input while this lives.
struct EchoOff {
    saved: Option<libc::termios>,
}

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on descriptor 0 with a termios we own; a failure
        // (not a terminal after all) leaves the terminal as it was and is reported by -1.
        unsafe {
            let mut term: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut term) != 0 {
                return EchoOff { saved: None };
            }
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &term) != 0 {
                return EchoOff { saved: None };
            }
            EchoOff { saved: Some(saved) }
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restores the settings read in `new` on the same descriptor.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Vec<u8>, String> {
        read_line(&mut &bytes[..]).map(|line| line.to_vec())
    }

    #[test]
    fn one_line_without_its_end() {
        assert_eq!(read(b"pw\n"), Ok(b"pw".to_vec()));
        assert_eq!(read(b"pw\r\n"), Ok(b"pw".to_vec()));
        assert_eq!(read(b"pw"), Ok(b"pw".to_vec()), "no final newline");
        assert_eq!(read(b" spaces kept \nsecond line\n"), Ok(b" spaces kept ".to_vec()));
        assert_eq!(read(&[0xff, b':', b'\n']), Ok(vec![0xff, b':']), "any bytes");
        assert!(read(b"").unwrap_err().contains("no password"));
        assert!(read(b"\n").unwrap_err().contains("no password"));
        assert_eq!(read(&[b'x'; 255]).map(|l| l.len()), Ok(255));
        assert!(read(&[b'x'; 256]).unwrap_err().contains("255"));
        assert!(read(&[b'x'; 1000]).unwrap_err().contains("255"));
    }
}
