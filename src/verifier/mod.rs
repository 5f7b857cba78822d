//! Passwords checked without stalling the loop: argon2id hashes verified on helper threads,
//! successful logins remembered, brute force throttled.
//!
//! Verifying an argon2id hash costs milliseconds of CPU by design (about 20 ms at the
//! defaults `m=19456,t=2,p=1` on this project's machine: `docs/security.md`), which on the loop
//! thread would stall every other client for that long. So:
//!
//! - **[`Passwords`]** (one per loop, lent to connections in their `Ctx`) decides a login.
//!   In order: is the client's address locked out ([`throttle`])? A plaintext user is
//!   compared on the loop, in constant time. A hashed user's login is looked up in the
//!   [`cache`] of recent successes (a hit answers at once); a login identical to one already
//!   being verified by this loop waits for that verification's answer; anything else becomes a
//!   [`Job`] for the verifier threads, and the connection waits (its handshake's stage
//!   `Verifying`, not reading the client) until [`Passwords::next_verdict`] hands the loop
//!   its answer.
//! - **[`Verifier`]** (one per process, shared by the loops) owns the threads, the bounded job
//!   queue, the cache and the throttle. Threads start on demand, like the resolver's: one more
//!   whenever a job is queued while every thread is busy, up to `--verifier-threads` (default
//!   2: verification is CPU work, and threads beyond the cores only queue it in the kernel
//!   instead of here). The queue holds at most [`QUEUE`] jobs; when it is full a login is
//!   answered "failure" at once (logged, at most once per 10 s), so the loop never blocks and
//!   memory stays bounded (each job in progress holds `m` KiB of argon2 memory).
//! - A job's answer goes back through a channel to the loop that asked, which its `Waker`
//!   wakes. Answers carry the connection's key and id, like the resolver's: a connection that
//!   closed meanwhile (the handshake timeout still applies while it waits) just drops its
//!   answer. The throttle counts the attempt either way, so closing early does not hide a
//!   wrong guess.
//!
//! Password bytes are copied out of the handshake buffer only into a job, wiped
//! ([`zeroize`]) when the job is done, and never logged; the handshake wipes its own copy as
//! soon as the message is parsed.

mod cache;
mod throttle;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use zeroize::Zeroizing;

use crate::users::{Secret, User, Users};

pub use cache::{Cache, Digester};
pub use throttle::{Admission, Lockout, Source, Throttle};

/// Verifier threads when `--verifier-threads` is not given.
pub const DEFAULT_THREADS: usize = 2;
/// Jobs waiting for a verifier thread at most (all loops together).
pub const QUEUE: usize = 256;
/// The largest `m` (KiB) a hash may ask for: 1 GiB, per verification in progress.
pub const MAX_MEMORY_KIB: u32 = 1 << 20;

/// Whether `phc` is a hash socksloop can verify: an argon2id PHC string, version 19, whose
/// parameters parse (and ask for at most [`MAX_MEMORY_KIB`]), with a salt and an output.
/// For loading users: a bad hash is an error at start-up (or a rejected reload), not a login
/// that always fails.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc).map_err(|e| format!("not a PHC string ({e})"))?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(format!("algorithm '{}' is not supported (only argon2id)", hash.algorithm.as_str()));
    }
    if hash.version != Some(0x13) {
        return Err("only argon2 version 19 (v=19) is supported".into());
    }
    let params = Params::try_from(&hash).map_err(|e| format!("bad argon2 parameters ({e})"))?;
    if params.m_cost() > MAX_MEMORY_KIB {
        return Err(format!("m={} asks for more than 1 GiB per verification", params.m_cost()));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("the salt or the hash is missing".into());
    }
    Ok(())
}

/// An argon2id PHC string for `password` with a random 16-byte salt and the OWASP parameters
/// (`m=19456,t=2,p=1`; argon2's defaults). What `socksloop hash-password` prints.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    hash_password_with(password, Params::DEFAULT)
}

/// [`hash_password`] with other parameters (tests use cheap or expensive ones).
pub fn hash_password_with(password: &[u8], params: Params) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let hash = hasher.hash_password_with_salt(password, &salt).map_err(|e| format!("cannot hash: {e}"))?;
    Ok(hash.to_string())
}

/// Argon2 parameters `m` (KiB), `t`, `p`, for [`hash_password_with`].
pub fn params(m: u32, t: u32, p: u32) -> Result<Params, String> {
    Params::new(m, t, p, None).map_err(|e| e.to_string())
}

/// Whether `password` matches `phc`; `Err` when the hash itself is unusable.
pub fn verify(password: &[u8], phc: &str) -> Result<bool, String> {
    check_phc(phc)?;
    let hash = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    match Argon2::default().verify_password(password, &hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// What a login came to.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The password is right: this user logged in.
    Accepted(Arc<User>),
    Refused(Refusal),
}

/// Why a login was refused. The client gets RFC 1929 status 1 for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such user, or the wrong password.
    Wrong,
    /// The client's address is locked out, or has too many verifications in flight.
    Throttled,
    /// The verifier's queue is full.
    Busy,
    /// The user's hash cannot be verified (an invalid PHC string got in).
    BadHash,
}

/// What [`Passwords::login`] decided now.
#[derive(Debug)]
pub enum Login {
    Done(Verdict),
    /// A verifier thread has it; the answer comes through [`Passwords::next_verdict`].
    Pending,
}

/// The connection a verdict is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub key: usize,
    pub conn: u64,
    client: SocketAddr,
}

/// One hash to verify.
struct Job {
    /// Which of the asking loop's verifications this is.
    id: u64,
    user: Arc<User>,
    password: Zeroizing<Vec<u8>>,
    /// The password's digest (for the cache).
    digest: cache::Digest,
    answers: Sender<Done>,
    waker: Option<Arc<mio::Waker>>,
}

/// A job's answer.
struct Done {
    id: u64,
    result: Result<bool, String>,
}

/// The verifier threads, their queue, and what every loop shares: the cache and the throttle.
pub struct Verifier {
    queue: SyncSender<Job>,
    inner: Arc<Inner>,
}

/// What the threads hold (not the queue's sending end, so they end when the loops do).
struct Inner {
    jobs: Mutex<Receiver<Job>>,
    max_threads: usize,
    threads: Mutex<usize>,
    /// Jobs queued or being verified.
    pending: AtomicUsize,
    cache: Mutex<Cache>,
    throttle: Mutex<Throttle>,
    digester: Digester,
    /// Logins refused because the queue was full, and when that was last logged.
    busy: AtomicU64,
    busy_logged: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({} threads at most)", self.inner.max_threads)
    }
}

/// A poisoned lock still guards consistent data here (every update is a single step).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Verifier {
    /// A verifier that will start up to `max_threads` threads, as jobs need them. No thread
    /// starts here.
    pub fn new(max_threads: usize) -> std::io::Result<Verifier> {
        Verifier::with_queue(max_threads, QUEUE)
    }

    fn with_queue(max_threads: usize, queue: usize) -> std::io::Result<Verifier> {
        let (queue, jobs) = mpsc::sync_channel(queue);
        let inner = Inner {
            jobs: Mutex::new(jobs),
            max_threads: max_threads.max(1),
            threads: Mutex::new(0),
            pending: AtomicUsize::new(0),
            cache: Mutex::new(Cache::default()),
            throttle: Mutex::new(Throttle::default()),
            digester: Digester::random()?,
            busy: AtomicU64::new(0),
            busy_logged: Mutex::new(None),
        };
        Ok(Verifier { queue, inner: Arc::new(inner) })
    }

    /// How many verifier threads are running.
    pub fn threads(&self) -> usize {
        *lock(&self.inner.threads)
    }

    /// Queue `job`; gives it back when the queue is full.
    fn submit(&self, job: Job) -> Result<(), Job> {
        self.inner.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) = self.queue.try_send(job) {
            self.inner.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(job);
        }
        let mut threads = lock(&self.inner.threads);
        if self.inner.pending.load(Ordering::Acquire) > *threads && *threads < self.inner.max_threads {
            let inner = Arc::clone(&self.inner);
            let spawned = thread::Builder::new()
                .name(format!("verifier-{}", *threads))
                .stack_size(256 * 1024)
                .spawn(move || verify_until_closed(&inner));
            match spawned {
                Ok(_) => *threads += 1,
                // The job waits for a thread that exists or, with none, for the handshake
                // timeout; the loop goes on.
                Err(e) => log::error!("cannot start a verifier thread ({} running): {e}", *threads),
            }
        }
        Ok(())
    }

    /// Count a login refused for a full queue; warn at most once per 10 s.
    fn note_busy(&self, now: Instant) {
        let refused = self.inner.busy.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = lock(&self.inner.busy_logged);
        if logged.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(10)) {
            *logged = Some(now);
            log::warn!(
                "password verifier busy: {QUEUE} verifications queued; refusing logins \
                 ({refused} so far)"
            );
        }
    }
}

fn verify_until_closed(inner: &Inner) {
    loop {
        // Hold the lock only while taking a job, never while verifying.
        let next = lock(&inner.jobs).recv();
        let Ok(job) = next else {
            return; // every loop is gone
        };
        let Secret::Argon2id(phc) = &job.user.secret else {
            continue; // only hashed users are sent here
        };
        let result = verify(&job.password, phc);
        drop(job.password); // wiped on drop
        if result == Ok(true) {
            let phc = inner.digester.digest(&[phc.as_bytes()]);
            lock(&inner.cache).insert(job.user.name.as_bytes(), job.digest, phc, Instant::now());
        }
        inner.pending.fetch_sub(1, Ordering::AcqRel);
        if job.answers.send(Done { id: job.id, result }).is_err() {
            continue; // that loop has ended
        }
        if let Some(waker) = &job.waker {
            let _ = waker.wake();
        }
    }
}

/// Logins waiting for the same verification (same user, password and hash).
struct InFlight {
    user: Arc<User>,
    digest: cache::Digest,
    waiters: Vec<Waiter>,
}

/// One loop's side of the verifier: decides logins, and hands verdicts back to the loop.
pub struct Passwords {
    verifier: Arc<Verifier>,
    answers_tx: Sender<Done>,
    answers: Receiver<Done>,
    waker: Option<Arc<mio::Waker>>,
    next_id: u64,
    in_flight: HashMap<u64, InFlight>,
    /// (user name, password digest) → the job verifying it.
    by_login: HashMap<(Box<[u8]>, cache::Digest), u64>,
    /// Verdicts ready for their connections (one job can answer several).
    ready: VecDeque<(Waiter, Verdict)>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Passwords({} verifications in flight)", self.in_flight.len())
    }
}

impl Passwords {
    /// A loop's handle on `verifier`; each answer wakes `waker` (`None`: the caller polls).
    pub fn new(verifier: Arc<Verifier>, waker: Option<Arc<mio::Waker>>) -> Passwords {
        let (answers_tx, answers) = mpsc::channel();
        Passwords {
            verifier,
            answers_tx,
            answers,
            waker,
            next_id: 0,
            in_flight: HashMap::new(),
            by_login: HashMap::new(),
            ready: VecDeque::new(),
        }
    }

    /// Decide the login of `name` with `password` from `client` for connection (`key`,
    /// `conn`): at once, or later through [`Passwords::next_verdict`].
    #[allow(clippy::too_many_arguments)]
    pub fn login(
        &mut self,
        users: &Users,
        name: &[u8],
        password: &[u8],
        client: SocketAddr,
        key: usize,
        conn: u64,
        now: Instant,
    ) -> Login {
        let shown = String::from_utf8_lossy(name);
        let shown = shown.escape_debug();
        let admission = lock(&self.verifier.inner.throttle).admit(client.ip(), now);
        match admission {
            Admission::Go => {}
            Admission::LockedOut(left) => {
                log::debug!(
                    "conn {conn}: login of user '{shown}' from {client} refused unchecked: \
                     locked out for {:.0} s more",
                    left.as_secs_f64()
                );
                return Login::Done(Verdict::Refused(Refusal::Throttled));
            }
            Admission::TooMany => {
                log::info!(
                    "conn {conn}: login of user '{shown}' from {client} refused unchecked: \
                     too many logins from that address in progress"
                );
                return Login::Done(Verdict::Refused(Refusal::Throttled));
            }
        }
        let waiter = Waiter { key, conn, client };
        let user = match users.get(name) {
            Some(user) if matches!(user.secret, Secret::Argon2id(_)) => Arc::clone(user),
            // Plaintext and unknown users: constant time, on the loop.
            _ => {
                let accepted = users.verify_plain(name, password) == Some(true);
                let verdict = match users.get(name) {
                    Some(user) if accepted => Verdict::Accepted(Arc::clone(user)),
                    _ => Verdict::Refused(Refusal::Wrong),
                };
                self.settle(&waiter, name, &verdict, now);
                return Login::Done(verdict);
            }
        };
        let Secret::Argon2id(phc) = &user.secret else { unreachable!("matched above") };
        let inner = &self.verifier.inner;
        let digest = inner.digester.digest(&[name, password]);
        let phc_digest = inner.digester.digest(&[phc.as_bytes()]);
        if lock(&inner.cache).hit(name, &digest, &phc_digest, now) {
            log::debug!("conn {conn}: user '{shown}' logged in (remembered verification)");
            let verdict = Verdict::Accepted(user);
            self.settle(&waiter, name, &verdict, now);
            return Login::Done(verdict);
        }
        // The same login already being verified (a client opening several connections at
        // once): wait for that answer instead of verifying again.
        let login = (Box::<[u8]>::from(name), digest);
        if let Some(job) = self.by_login.get(&login)
            && let Some(flight) = self.in_flight.get_mut(job)
            && flight.user.secret == user.secret
        {
            flight.waiters.push(waiter);
            return Login::Pending;
        }
        let id = self.next_id;
        self.next_id += 1;
        let job = Job {
            id,
            user: Arc::clone(&user),
            password: Zeroizing::new(password.to_vec()),
            digest,
            answers: self.answers_tx.clone(),
            waker: self.waker.clone(),
        };
        if self.verifier.submit(job).is_err() {
            lock(&inner.throttle).abort(client.ip(), now);
            self.verifier.note_busy(now);
            log::info!("conn {conn}: login of user '{shown}' from {client} refused: verifier busy");
            return Login::Done(Verdict::Refused(Refusal::Busy));
        }
        log::debug!("conn {conn}: verifying the password of user '{shown}' off the loop");
        self.in_flight.insert(id, InFlight { user, digest, waiters: vec![waiter] });
        self.by_login.insert(login, id);
        Login::Pending
    }

    /// The next verdict that has come back, for the connection it names (which may have
    /// closed since: the caller checks the id). Never blocks.
    pub fn next_verdict(&mut self, now: Instant) -> Option<(Waiter, Verdict)> {
        while self.ready.is_empty() {
            let done = self.answers.try_recv().ok()?;
            let Some(flight) = self.in_flight.remove(&done.id) else { continue };
            let login = (Box::<[u8]>::from(flight.user.name.as_bytes()), flight.digest);
            if self.by_login.get(&login) == Some(&done.id) {
                self.by_login.remove(&login);
            }
            let verdict = match done.result {
                Ok(true) => Verdict::Accepted(Arc::clone(&flight.user)),
                Ok(false) => Verdict::Refused(Refusal::Wrong),
                Err(why) => {
                    log::warn!(
                        "user '{}' has a password hash that cannot be verified: {why}",
                        flight.user.name
                    );
                    Verdict::Refused(Refusal::BadHash)
                }
            };
            for waiter in flight.waiters {
                self.settle(&waiter, flight.user.name.as_bytes(), &verdict, now);
                self.ready.push_back((waiter, verdict.clone()));
            }
        }
        self.ready.pop_front()
    }

    /// Verifications this loop is waiting for.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The verifier this handle uses.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The login of `waiter` is decided: tell the throttle, log a failure.
    fn settle(&self, waiter: &Waiter, name: &[u8], verdict: &Verdict, now: Instant) {
        let ip = waiter.client.ip();
        let mut throttle = lock(&self.verifier.inner.throttle);
        let lockout = match verdict {
            Verdict::Accepted(_) => throttle.finish(ip, false, now),
            Verdict::Refused(Refusal::Wrong) => throttle.finish(ip, true, now),
            Verdict::Refused(_) => {
                throttle.abort(ip, now);
                None
            }
        };
        drop(throttle);
        if matches!(verdict, Verdict::Refused(Refusal::Wrong)) {
            // The user name helps operators; the password is never logged.
            log::info!(
                "conn {}: authentication failed for user '{}' from {}",
                waiter.conn,
                String::from_utf8_lossy(name).escape_debug(),
                waiter.client
            );
        }
        if let Some(Lockout { source, strikes, duration }) = lockout {
            let why = if strikes == 1 {
                format!("{} failed logins within {} s", throttle::THRESHOLD, throttle::WINDOW.as_secs())
            } else {
                format!("another failed login after {} lockouts", strikes - 1)
            };
            log::warn!("client {source}: {why}; refusing its logins for {} s", duration.as_secs());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters, so unit tests verify in microseconds.
    fn cheap(password: &[u8]) -> String {
        hash_password_with(password, params(8, 1, 1).unwrap()).unwrap()
    }

    fn hashed(name: &str, phc: String) -> User {
        let mut user = User::plain(name, b"");
        user.secret = Secret::Argon2id(phc);
        user
    }

    fn client(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 40000))
    }

    /// Wait (bounded) for the next verdict.
    fn wait_verdict(passwords: &mut Passwords) -> (Waiter, Verdict) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(answer) = passwords.next_verdict(Instant::now()) {
                return answer;
            }
            assert!(Instant::now() < deadline, "no verdict in 10 s");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn check_phc_accepts_argon2id_and_rejects_the_rest() {
        let good = hash_password(b"pw").unwrap();
        assert!(good.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{good}");
        assert_eq!(check_phc(&good), Ok(()));
        assert_eq!(check_phc("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"), Ok(()));
        let cases = [
            ("", "not a PHC string"),
            ("plain-password", "not a PHC string"),
            ("$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "only argon2id"),
            ("$argon2d$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "only argon2id"),
            ("$scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "only argon2id"),
            ("$argon2id$v=16$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "version 19"),
            ("$argon2id$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "version 19"),
            ("$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "parameters"),
            ("$argon2id$v=19$m=8,t=0,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "parameters"),
            ("$argon2id$v=19$m=8,t=x,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", ""),
            ("$argon2id$v=19$m=2097152,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "1 GiB"),
            ("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ", "missing"),
            ("$argon2id$v=19$m=8,t=1,p=1", "missing"),
        ];
        for (phc, why) in cases {
            let err = check_phc(phc).expect_err(phc);
            assert!(err.contains(why), "{phc}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn hashes_verify_and_salts_differ() {
        let one = cheap(b"correct horse");
        let two = cheap(b"correct horse");
        assert_ne!(one, two, "a random salt each time");
        assert_eq!(verify(b"correct horse", &one), Ok(true));
        assert_eq!(verify(b"correct horse", &two), Ok(true));
        assert_eq!(verify(b"correct hors", &one), Ok(false));
        assert_eq!(verify(b"", &one), Ok(false));
        assert!(verify(b"x", "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").is_err());
    }

    #[test]
    fn logins_plain_hashed_cached_and_wrong() {
        let mut users = Users::default();
        users.add(User::plain("plain", b"open sesame")).unwrap();
        users.add(hashed("hashed", cheap(b"s3cret"))).unwrap();
        let verifier = Arc::new(Verifier::new(1).unwrap());
        let mut passwords = Passwords::new(Arc::clone(&verifier), None);
        let now = Instant::now();
        assert_eq!(verifier.threads(), 0, "no thread before the first hash");

        let login = passwords.login(&users, b"plain", b"open sesame", client(1), 1, 1, now);
        assert!(matches!(login, Login::Done(Verdict::Accepted(u)) if u.name == "plain"));
        let login = passwords.login(&users, b"plain", b"wrong", client(1), 1, 2, now);
        assert!(matches!(login, Login::Done(Verdict::Refused(Refusal::Wrong))));
        let login = passwords.login(&users, b"nobody", b"x", client(1), 1, 3, now);
        assert!(matches!(login, Login::Done(Verdict::Refused(Refusal::Wrong))));
        assert_eq!(verifier.threads(), 0, "plaintext never leaves the loop");

        // A hash goes to a thread; the answer names the connection.
        assert!(matches!(
            passwords.login(&users, b"hashed", b"s3cret", client(1), 4, 4, now),
            Login::Pending
        ));
        assert_eq!(verifier.threads(), 1);
        let (waiter, verdict) = wait_verdict(&mut passwords);
        assert_eq!((waiter.key, waiter.conn), (4, 4));
        assert!(matches!(verdict, Verdict::Accepted(u) if u.name == "hashed"));
        // Remembered: answered at once.
        let login = passwords.login(&users, b"hashed", b"s3cret", client(1), 5, 5, now);
        assert!(matches!(login, Login::Done(Verdict::Accepted(_))));
        // A wrong password is verified (and not remembered).
        assert!(matches!(passwords.login(&users, b"hashed", b"nope", client(1), 6, 6, now), Login::Pending));
        let (waiter, verdict) = wait_verdict(&mut passwords);
        assert_eq!(waiter.conn, 6);
        assert!(matches!(verdict, Verdict::Refused(Refusal::Wrong)));
        assert_eq!(passwords.in_flight(), 0);
    }

    #[test]
    fn a_changed_hash_is_not_answered_from_the_cache() {
        let verifier = Arc::new(Verifier::new(1).unwrap());
        let mut passwords = Passwords::new(verifier, None);
        let now = Instant::now();
        let mut users = Users::default();
        users.add(hashed("alice", cheap(b"old"))).unwrap();
        assert!(matches!(passwords.login(&users, b"alice", b"old", client(1), 1, 1, now), Login::Pending));
        assert!(matches!(wait_verdict(&mut passwords).1, Verdict::Accepted(_)));
        // A reload gives alice a new hash of the same password: verified afresh.
        let mut reloaded = Users::default();
        reloaded.add(hashed("alice", cheap(b"old"))).unwrap();
        assert!(matches!(passwords.login(&reloaded, b"alice", b"old", client(1), 2, 2, now), Login::Pending));
        assert!(matches!(wait_verdict(&mut passwords).1, Verdict::Accepted(_)));
        // And a new password: the old one no longer works, from the cache or otherwise.
        let mut changed = Users::default();
        changed.add(hashed("alice", cheap(b"new"))).unwrap();
        assert!(matches!(passwords.login(&changed, b"alice", b"old", client(1), 3, 3, now), Login::Pending));
        assert!(matches!(wait_verdict(&mut passwords).1, Verdict::Refused(Refusal::Wrong)));
    }

    #[test]
    fn identical_logins_in_flight_share_one_verification() {
        let verifier = Arc::new(Verifier::new(1).unwrap());
        let mut passwords = Passwords::new(verifier, None);
        let now = Instant::now();
        let mut users = Users::default();
        // Expensive enough that the three logins are all in before the answer.
        let phc = hash_password_with(b"pw", params(4096, 2, 1).unwrap()).unwrap();
        users.add(hashed("alice", phc)).unwrap();
        for conn in 1..=3 {
            assert!(matches!(
                passwords.login(&users, b"alice", b"pw", client(1), 0, conn, now),
                Login::Pending
            ));
        }
        assert_eq!(passwords.in_flight(), 1, "one job for three connections");
        let mut conns: Vec<u64> = (0..3).map(|_| wait_verdict(&mut passwords).0.conn).collect();
        conns.sort_unstable();
        assert_eq!(conns, [1, 2, 3]);
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_a_locked_out_address_is_not_verified() {
        // No room at all in the queue while the one thread is busy.
        let verifier = Arc::new(Verifier::with_queue(1, 0).unwrap());
        let mut passwords = Passwords::new(Arc::clone(&verifier), None);
        let now = Instant::now();
        let mut users = Users::default();
        users.add(hashed("alice", cheap(b"pw"))).unwrap();
        // A rendezvous queue takes a job only while a thread waits for one; none exists yet.
        let login = passwords.login(&users, b"alice", b"pw", client(1), 0, 1, now);
        assert!(matches!(login, Login::Done(Verdict::Refused(Refusal::Busy))), "{login:?}");

        // Five wrong plaintext guesses from .2 lock it out; .3 is unaffected.
        let mut users = Users::default();
        users.add(User::plain("bob", b"right")).unwrap();
        for conn in 0..5 {
            passwords.login(&users, b"bob", b"guess", client(2), 0, conn, now);
        }
        let login = passwords.login(&users, b"bob", b"right", client(2), 0, 9, now);
        assert!(matches!(login, Login::Done(Verdict::Refused(Refusal::Throttled))), "{login:?}");
        let login = passwords.login(&users, b"bob", b"right", client(3), 0, 10, now);
        assert!(matches!(login, Login::Done(Verdict::Accepted(_))), "{login:?}");
    }
}
