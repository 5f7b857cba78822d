//! The target in a child process, and the child's side (`--serve-target`).
//!
//! Why a separate process: with 9000 idle relays the tool holds 9000 client sockets and the
//! target 9000 more; one process would need 18000 descriptors next to the 20000 hard limit.
//! Split, each stays far below it. The child also keeps the target's memory out of anything
//! measured in the tool.
//!
//! The parent talks to the child over its stdin/stdout: the child prints `listening ADDR`
//! once, then answers each `stats` line with `UPLOADED MISMATCHES ACCEPTED`. When stdin
//! closes (the parent finished or died) the child exits, so it never outlives the tool.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use socksloop_bench::target::{Snapshot, Target};

/// A target running in a child process; dropping it ends the child (by its PID).
pub struct TargetProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl TargetProcess {
    /// Re-execute this binary as `--serve-target BIND` and wait for its address.
    pub fn spawn(bind: SocketAddr) -> io::Result<TargetProcess> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("--serve-target")
            .arg(bind.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("child has no stdout"))?;
        let mut process = TargetProcess { child, stdin, stdout: BufReader::new(stdout), addr: bind };
        let line = process.read_line()?;
        process.addr = line
            .strip_prefix("listening ")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("target child said {line:?}")))?;
        Ok(process)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stats(&mut self) -> io::Result<Snapshot> {
        let stdin = self.stdin.as_mut().ok_or_else(|| io::Error::other("target child is closed"))?;
        stdin.write_all(b"stats\n")?;
        stdin.flush()?;
        let line = self.read_line()?;
        let numbers: Vec<u64> = line.split_whitespace().filter_map(|n| n.parse().ok()).collect();
        match numbers[..] {
            [uploaded, mismatches, accepted] => Ok(Snapshot { uploaded, mismatches, accepted }),
            _ => Err(io::Error::other(format!("target child said {line:?}"))),
        }
    }

    /// One line from the child; EOF means it died (its stderr says why).
    fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(io::Error::other("target child exited"));
        }
        Ok(line)
    }
}

impl Drop for TargetProcess {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF on its stdin: the child exits by itself
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = self.child.kill(); // by PID: this child only
        let _ = self.child.wait();
    }
}

/// The child's main: serve until stdin closes.
pub fn serve(bind: SocketAddr) -> ExitCode {
    let target = match Target::start(bind) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("socksloop-bench target: cannot listen on {bind}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = io::stdout().lock();
    if writeln!(out, "listening {}", target.addr()).and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "stats" {
            let s = target.stats();
            if writeln!(out, "{} {} {}", s.uploaded, s.mismatches, s.accepted)
                .and_then(|()| out.flush())
                .is_err()
            {
                break;
            }
        }
    }
    ExitCode::SUCCESS
}
