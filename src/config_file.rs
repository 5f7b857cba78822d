//! The configuration file (`--config PATH`, TOML): every long flag is a key of the same name,
//! and `[[users]]` tables describe users and their own settings.
//!
//! ```toml
//! listen = ["127.0.0.1:1080"]
//! max-connections-per-client = 64
//!
//! [[users]]
//! name = "alice"
//! password-hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! bind-out = "203.0.113.5"
//! rate-limit = "20M"
//! ```
//!
//! **Flags.** A key that names a flag is turned back into that flag (`idle-timeout = 60` →
//! `--idle-timeout 60`, `block-private = true` → `--block-private`, an array → the flag
//! repeated) and parsed by the same code as the command line, so the file and the flags cannot
//! disagree about what a value means, and a new flag is a new key without any code here. A
//! flag given on the command line replaces the file's key of the same name (for a repeatable
//! flag, the whole list). Each key is also checked alone, so an error names the file, the line
//! and the key.
//!
//! **Users.** `[[users]]` tables are read here into [`User`]s: `name`, one of `password-hash`
//! (an argon2id PHC string) or `password` (plaintext, allowed with a warning), and optional
//! `bind-out`, `bind-interface`, `fwmark`, `max-connections`, `rate-limit`, `expires`,
//! `allow-dest`, `deny-dest`.
//!
//! Why the `toml` crate's span-keeping tables rather than `serde` structs: the flag keys are
//! dynamic (they follow `--help`), and every error must say which line and key it is about;
//! the spans give both for every value. Pure: text in, flags and users out.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::acl::Cidr;
use crate::config::{self, HELP};
use crate::users::{Secret, User, Users};

/// What a config file says: flags to parse before the command line's, and users.
#[derive(Debug, Default)]
pub struct FileConfig {
    /// `(flag, value)` pairs in file order, e.g. `("--listen", Some("127.0.0.1:1080"))`.
    pub flags: Vec<(String, Option<String>)>,
    pub users: Users,
    /// Things worth a warning (plaintext passwords), for the log once it exists.
    pub warnings: Vec<String>,
}

/// Flags that may be given more than once: an array in the file.
const REPEATABLE: &[&str] =
    &["listen", "nameserver", "allow-client", "allow-dest", "deny-dest", "deny-port", "proxy-protocol"];

/// Keys that are flags of the command line but make no sense in a file.
const NOT_IN_FILE: &[&str] = &["help", "version", "config"];

/// The long flags `--help` documents, each with whether it takes a value. `--help` is the
/// single list of flags (a test keeps the man page in step with it), so the file follows it.
fn known_flags() -> Vec<(&'static str, bool)> {
    let mut flags = Vec::new();
    for line in HELP.lines() {
        let trimmed = line.trim_start();
        // Option lines are indented and start with the flag (`-h, --help` too).
        let Some(rest) = trimmed.strip_prefix("--").or_else(|| trimmed.split_once(", --").map(|(_, r)| r))
        else {
            continue;
        };
        // Exactly four spaces: deeper lines continue a description (and may name flags).
        if line.len() - trimmed.len() != 4 {
            continue;
        }
        let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap_or(rest.len());
        let name = &rest[..name_end];
        // A value follows after one space (`--listen ADDR:PORT`); two spaces start the text.
        let takes_value = rest[name_end..].starts_with(' ') && !rest[name_end..].starts_with("  ");
        if !name.is_empty() && !flags.iter().any(|(n, _)| *n == name) {
            flags.push((name, takes_value));
        }
    }
    flags
}

/// Parse the text of a config file; `source` names it in error messages.
pub fn parse(text: &str, source: &str) -> Result<FileConfig, String> {
    let at = |span: Range<usize>| format!("{source}:{}", line_of(text, span.start));
    let table = DeTable::parse(text).map_err(|e| match e.span() {
        Some(span) => format!("{}: {}", at(span), one_line(e.message())),
        None => format!("{source}: {}", one_line(e.message())),
    })?;
    let flags = known_flags();
    let mut file = FileConfig::default();
    for (key, value) in table.get_ref() {
        let name: &str = key.get_ref();
        let here = at(key.span());
        if name == "users" {
            parse_users(value, text, source, &mut file)?;
            continue;
        }
        let Some(&(_, takes_value)) =
            flags.iter().find(|(n, _)| *n == name).filter(|_| !NOT_IN_FILE.contains(&name))
        else {
            return Err(format!(
                "{here}: unknown key '{name}' (keys are the long flags of --help, and [[users]])"
            ));
        };
        let pairs =
            flag_values(name, takes_value, value).map_err(|why| format!("{here}: key '{name}': {why}"))?;
        // Check this key alone with the command line's parser, so its error can name the line.
        let mut args = Vec::new();
        for (flag, value) in &pairs {
            args.push(flag.clone().into());
            if let Some(value) = value {
                args.push(value.clone().into());
            }
        }
        if let Err(e) = config::parse_args_only(args) {
            return Err(format!("{}: key '{name}': {e}", at(value.span())));
        }
        file.flags.extend(pairs);
    }
    Ok(file)
}

/// A key's value as flags: a scalar → the flag with it, `true` → the bare flag, an array of
/// a repeatable flag → the flag once per element.
fn flag_values(
    name: &str,
    takes_value: bool,
    value: &Spanned<DeValue<'_>>,
) -> Result<Vec<(String, Option<String>)>, String> {
    let flag = format!("--{name}");
    if !takes_value {
        return match value.get_ref() {
            DeValue::Boolean(true) => Ok(vec![(flag, None)]),
            DeValue::Boolean(false) => Ok(Vec::new()),
            other => Err(format!("expected true or false, found {}", type_name(other))),
        };
    }
    match value.get_ref() {
        DeValue::Array(items) if REPEATABLE.contains(&name) => items
            .iter()
            .map(|item| scalar(item.get_ref()).map(|v| (flag.clone(), Some(v))))
            .collect::<Result<_, _>>(),
        DeValue::Array(_) => Err("expected one value, found an array (this flag is not repeatable)".into()),
        other => Ok(vec![(flag, Some(scalar(other)?))]),
    }
}

/// A string, number or boolean as the text a flag would get.
fn scalar(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) if i.radix() == 10 => Ok(i.as_str().replace('_', "")),
        DeValue::Integer(i) => {
            // 0x/0o/0b: give the flag the number in decimal.
            i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
                .map(|n| n.to_string())
                .map_err(|_| format!("integer '{}' out of range", i.as_str()))
        }
        DeValue::Float(f) => Ok(f.as_str().replace('_', "")),
        other => Err(format!("expected a string or a number, found {}", type_name(other))),
    }
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// `[[users]]`: an array of tables, each one user.
fn parse_users(
    value: &Spanned<DeValue<'_>>,
    text: &str,
    source: &str,
    file: &mut FileConfig,
) -> Result<(), String> {
    let at = |span: Range<usize>| format!("{source}:{}", line_of(text, span.start));
    let DeValue::Array(entries) = value.get_ref() else {
        return Err(format!("{}: key 'users': expected [[users]] tables", at(value.span())));
    };
    for entry in entries.iter() {
        let DeValue::Table(table) = entry.get_ref() else {
            return Err(format!("{}: key 'users': expected [[users]] tables", at(entry.span())));
        };
        let user = parse_user(table).map_err(|e| e.render(&at, entry.span()))?;
        if let Secret::Plain(_) = user.secret {
            file.warnings.push(format!(
                "{}: user '{}' has a plaintext password; prefer password-hash (socksloop hash-password)",
                at(entry.span()),
                user.name
            ));
        }
        let name = user.name.clone();
        file.users.add(user).map_err(|why| format!("{}: user '{name}': {why}", at(entry.span())))?;
    }
    Ok(())
}

/// An error inside a `[[users]]` table: the key and where.
struct UserError {
    key: String,
    span: Option<Range<usize>>,
    why: String,
}

impl UserError {
    fn render(&self, at: &dyn Fn(Range<usize>) -> String, table: Range<usize>) -> String {
        let place = at(self.span.clone().unwrap_or(table));
        format!("{place}: key 'users.{}': {}", self.key, self.why)
    }
}

/// The keys a `[[users]]` table may have.
const USER_KEYS: &[&str] = &[
    "name",
    "password-hash",
    "password",
    "bind-out",
    "bind-interface",
    "fwmark",
    "max-connections",
    "rate-limit",
    "expires",
    "allow-dest",
    "deny-dest",
];

fn parse_user(table: &DeTable<'_>) -> Result<User, UserError> {
    let fail =
        |key: &str, span: Option<Range<usize>>, why: String| UserError { key: key.to_owned(), span, why };
    let mut name = None;
    let mut secret = None;
    let mut user = User::plain("", b"");
    for (key, value) in table {
        let key_name: &str = key.get_ref();
        let span = Some(value.span());
        let err = |why: String| fail(key_name, span.clone(), why);
        let string = || match value.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            other => Err(err(format!("expected a string, found {}", type_name(other)))),
        };
        match key_name {
            "name" => name = Some(string()?),
            "password" | "password-hash" => {
                if secret.is_some() {
                    return Err(err("give either password or password-hash, not both".into()));
                }
                let text = string()?;
                secret = Some(if key_name == "password" {
                    Secret::Plain(text.into_bytes())
                } else {
                    check_password_hash(&text).map_err(&err)?;
                    Secret::Argon2id(text)
                });
            }
            "bind-out" => user.egress.bind_out = Some(config::parse_bind_out(&string()?).map_err(&err)?),
            "bind-interface" => {
                user.egress.interface = Some(config::parse_interface(&string()?).map_err(&err)?)
            }
            "fwmark" => {
                user.egress.fwmark =
                    Some(config::parse_fwmark(&scalar(value.get_ref()).map_err(&err)?).map_err(&err)?)
            }
            "max-connections" => user.max_connections = Some(positive(value.get_ref()).map_err(&err)?),
            "rate-limit" => user.rate_limit = Some(parse_rate(value.get_ref()).map_err(&err)?),
            "expires" => user.expires = Some(parse_expiry(value.get_ref()).map_err(&err)?),
            "allow-dest" => user.allow_dest = cidrs(value.get_ref()).map_err(&err)?,
            "deny-dest" => user.deny_dest = cidrs(value.get_ref()).map_err(&err)?,
            other => {
                return Err(fail(
                    other,
                    Some(key.span()),
                    format!("unknown key (expected one of {})", USER_KEYS.join(", ")),
                ));
            }
        }
    }
    user.name = name.ok_or_else(|| fail("name", None, "every [[users]] table needs a name".into()))?;
    user.secret = secret.ok_or_else(|| {
        fail("password-hash", None, format!("user '{}' needs password-hash or password", user.name))
    })?;
    Ok(user)
}

/// A PHC string for argon2id that the verifier can use (`crate::verifier::check_phc`: the
/// algorithm, version 19, parameters that parse, a salt and a hash).
fn check_password_hash(s: &str) -> Result<(), String> {
    crate::verifier::check_phc(s).map_err(|why| {
        format!(
            "expected an argon2id PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash; \
             make one with: socksloop hash-password): {why}"
        )
    })
}

fn positive(value: &DeValue<'_>) -> Result<usize, String> {
    match value {
        DeValue::Integer(i) => i
            .as_str()
            .replace('_', "")
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| "expected a whole number > 0".to_string()),
        other => Err(format!("expected a whole number > 0, found {}", type_name(other))),
    }
}

/// Bytes per second: an integer, or a string of digits with K, M or G (powers of 1024).
pub fn parse_rate_text(s: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid rate '{s}': expected bytes per second, e.g. 1048576, \"512K\", \"20M\", \"1G\"");
    let s = s.trim();
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, ' '),
    };
    let shift = match unit {
        ' ' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(bad()),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    match n.checked_shl(shift).filter(|v| *v > 0 && v >> shift == n) {
        Some(rate) => Ok(rate),
        None => Err(bad()),
    }
}

fn parse_rate(value: &DeValue<'_>) -> Result<u64, String> {
    match value {
        DeValue::Integer(i) => parse_rate_text(&i.as_str().replace('_', "")),
        DeValue::String(s) => parse_rate_text(s),
        other => {
            Err(format!("expected bytes per second (an integer or \"20M\"), found {}", type_name(other)))
        }
    }
}

fn cidrs(value: &DeValue<'_>) -> Result<Vec<Cidr>, String> {
    let DeValue::Array(items) = value else {
        return Err(format!("expected an array of CIDR strings, found {}", type_name(value)));
    };
    items
        .iter()
        .map(|item| match item.get_ref() {
            DeValue::String(s) => s.parse::<Cidr>(),
            other => Err(format!("expected a CIDR string, found {}", type_name(other))),
        })
        .collect()
}

/// `expires`: an RFC 3339 date-time with an offset, as a string or a TOML date-time, or a bare
/// date (midnight UTC of that day). A local date-time without offset is refused: the server's
/// time zone would decide when an account ends.
fn parse_expiry(value: &DeValue<'_>) -> Result<SystemTime, String> {
    let datetime = match value {
        DeValue::Datetime(dt) => *dt,
        DeValue::String(s) => s
            .parse::<toml_datetime::Datetime>()
            .map_err(|_| format!("invalid date-time '{s}': expected RFC 3339, e.g. 2027-06-30T00:00:00Z"))?,
        other => return Err(format!("expected an RFC 3339 date-time, found {}", type_name(other))),
    };
    expiry_instant(&datetime)
}

fn expiry_instant(dt: &toml_datetime::Datetime) -> Result<SystemTime, String> {
    use toml_datetime::Offset;
    let Some(date) = dt.date else {
        return Err("a date is needed, e.g. 2027-06-30T00:00:00Z".into());
    };
    let (seconds_of_day, offset_minutes) = match (dt.time, dt.offset) {
        (None, None) => (0, 0),
        (Some(_), None) => {
            return Err("a date-time needs a UTC offset (e.g. 2027-06-30T00:00:00Z or +02:00)".into());
        }
        (None, Some(_)) => return Err("an offset without a time".into()),
        (Some(time), Some(offset)) => {
            let minutes = match offset {
                Offset::Z => 0,
                Offset::Custom { minutes } => i64::from(minutes),
            };
            (
                i64::from(time.hour) * 3600
                    + i64::from(time.minute) * 60
                    + i64::from(time.second.unwrap_or(0)),
                minutes,
            )
        }
    };
    let days = days_from_civil(i64::from(date.year), i64::from(date.month), i64::from(date.day));
    let unix = days * 86_400 + seconds_of_day - offset_minutes * 60;
    if unix < 0 {
        return Err("date-times before 1970 are not accepted".into());
    }
    Ok(UNIX_EPOCH + Duration::from_secs(unix as u64))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Messages of the TOML parser may span lines; errors here are one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether the command line gives `--flag` (as `--flag`, `--flag VALUE` or `--flag=VALUE`).
pub fn given_on_command_line(args: &[std::ffi::OsString], flag: &str) -> bool {
    args.iter().any(|arg| {
        let arg = arg.to_string_lossy();
        arg == flag || arg.strip_prefix(flag).is_some_and(|rest| rest.starts_with('='))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::{BindOut, Egress};

    fn flags(file: &FileConfig) -> Vec<String> {
        file.flags
            .iter()
            .map(|(f, v)| format!("{f}{}", v.as_ref().map(|v| format!(" {v}")).unwrap_or_default()))
            .collect()
    }

    #[test]
    fn every_help_flag_is_known_with_its_arity() {
        let known = known_flags();
        for (name, takes_value) in [
            ("listen", true),
            ("block-private", false),
            ("allow-open-proxy", false),
            ("idle-timeout", true),
            ("max-connections-per-client", true),
            ("prefer-family", true),
            ("no-socks4", false),
            ("metrics", true),
        ] {
            assert!(known.contains(&(name, takes_value)), "{name}: {known:?}");
        }
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../docs/configuration.md");
        for (name, _) in known_flags().into_iter().filter(|(n, _)| !NOT_IN_FILE.contains(n)) {
            assert!(doc.contains(&format!("| `{name}` |")), "docs/configuration.md lacks the key {name}");
        }
        for key in USER_KEYS {
            assert!(doc.contains(&format!("| `{key}` |")), "docs/configuration.md lacks the user key {key}");
        }
    }

    #[test]
    fn keys_become_flags() {
        let text = r#"
listen = ["127.0.0.1:1080", "[::1]:1080"]
block-private = true
allow-open-proxy = false
idle-timeout = 60
handshake-timeout = 0.5
fwmark = 0x10
log-level = "debug"
"#;
        let file = parse(text, "t.toml").unwrap();
        // Keys come out sorted by name (the order of flags does not matter to the parser).
        assert_eq!(
            flags(&file),
            [
                "--block-private",
                "--fwmark 16",
                "--handshake-timeout 0.5",
                "--idle-timeout 60",
                "--listen 127.0.0.1:1080",
                "--listen [::1]:1080",
                "--log-level debug"
            ]
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases: &[(&str, &str)] = &[
            ("listen = [\"x\"]\n", "t.toml:1: key 'listen': invalid value 'x' for --listen"),
            ("\n\nidle-timeout = -1\n", "t.toml:3: key 'idle-timeout': invalid value '-1'"),
            ("\nbogus = 1\n", "t.toml:2: unknown key 'bogus'"),
            (
                "block-private = \"yes\"\n",
                "t.toml:1: key 'block-private': expected true or false, found a string",
            ),
            ("idle-timeout = [1, 2]\n", "t.toml:1: key 'idle-timeout': expected one value, found an array"),
            ("help = true\n", "t.toml:1: unknown key 'help'"),
            ("listen = \n", "t.toml:1: "),
            (
                "[[users]]\nname = \"a\"\npassword = \"p\"\nfwmark = \"many\"\n",
                "t.toml:4: key 'users.fwmark': invalid value 'many' for --fwmark",
            ),
            (
                "[[users]]\nname = \"a\"\npassword = \"p\"\ncolour = 1\n",
                "t.toml:4: key 'users.colour': unknown key",
            ),
            ("[[users]]\nname = \"a\"\n", "t.toml:1: key 'users.password-hash': user 'a' needs"),
            (
                "[[users]]\npassword = \"a\"\n",
                "t.toml:1: key 'users.name': every [[users]] table needs a name",
            ),
            (
                "[[users]]\nname = \"a\"\npassword-hash = \"$2y$10$abc\"\n",
                "t.toml:3: key 'users.password-hash': expected an argon2id PHC string",
            ),
            (
                "[[users]]\nname = \"a\"\npassword = \"p\"\nexpires = 2027-01-01T00:00:00\n",
                "t.toml:4: key 'users.expires': a date-time needs a UTC offset",
            ),
            (
                "[[users]]\nname = \"a\"\npassword = \"p\"\nrate-limit = \"20X\"\n",
                "t.toml:4: key 'users.rate-limit': invalid rate '20X'",
            ),
            (
                "[[users]]\nname = \"a\"\npassword = \"p\"\n[[users]]\nname = \"a\"\npassword = \"q\"\n",
                "t.toml:4: user 'a': user 'a' is listed twice",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text, "t.toml").expect_err(text);
            assert!(err.starts_with(expected), "{text:?}\n gave {err}\n want {expected}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn users_with_their_settings() {
        let text = r#"
[[users]]
name = "alice"
password-hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
bind-out = "203.0.113.5"
max-connections = 100
rate-limit = "20M"
expires = "2027-06-30T00:00:00Z"

[[users]]
name = "bob"
password = "plain"
bind-out = "incoming"
bind-interface = "eth1"
fwmark = 7
deny-dest = ["10.0.0.0/8"]
allow-dest = ["0.0.0.0/0"]
expires = 2027-06-30T02:00:00+02:00
"#;
        let file = parse(text, "t.toml").unwrap();
        let alice = file.users.get(b"alice").unwrap();
        assert!(matches!(alice.secret, Secret::Argon2id(_)));
        assert_eq!(alice.egress.bind_out, Some(BindOut::Addr("203.0.113.5".parse().unwrap())));
        assert_eq!(alice.max_connections, Some(100));
        assert_eq!(alice.rate_limit, Some(20 << 20));
        let bob = file.users.get(b"bob").unwrap();
        assert_eq!(bob.secret, Secret::Plain(b"plain".to_vec()));
        assert_eq!(
            bob.egress,
            Egress { bind_out: Some(BindOut::Incoming), interface: Some("eth1".into()), fwmark: Some(7) }
        );
        assert_eq!(bob.deny_dest, vec!["10.0.0.0/8".parse::<Cidr>().unwrap()]);
        // 02:00+02:00 is the same instant as 00:00Z; 2027-06-30 is day 20999 since 1970.
        assert_eq!(alice.expires, bob.expires);
        assert_eq!(alice.expires, Some(UNIX_EPOCH + Duration::from_secs(20_999 * 86_400)));
        assert_eq!(file.warnings.len(), 1);
        assert!(
            file.warnings[0].contains("'bob'") && file.warnings[0].contains("plaintext"),
            "{:?}",
            file.warnings
        );
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate_text("1048576"), Ok(1 << 20));
        assert_eq!(parse_rate_text("512K"), Ok(512 << 10));
        assert_eq!(parse_rate_text("20m"), Ok(20 << 20));
        assert_eq!(parse_rate_text("1G"), Ok(1 << 30));
        for bad in ["", "0", "M", "1.5M", "20MB", "-1", "99999999999999999999G"] {
            assert!(parse_rate_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2027, 6, 30), 20_999);
    }

    #[test]
    fn command_line_flag_detection() {
        let args: Vec<std::ffi::OsString> =
            ["--listen=1.2.3.4:1", "--block-private"].iter().map(Into::into).collect();
        assert!(given_on_command_line(&args, "--listen"));
        assert!(given_on_command_line(&args, "--block-private"));
        assert!(!given_on_command_line(&args, "--list"));
    }
}
