//! The JSON access log (`--log-format json`) as a test reads it: lines are parsed by Python's
//! `json` module (a parser that is not ours), which also checks the key set and each value's
//! type, and hands the values back in a form that needs no JSON parser here.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// The keys every access record has, and the ones a UDP association adds.
pub const ACCESS_KEYS: [&str; 13] = [
    "ts",
    "conn",
    "client",
    "user",
    "command",
    "target",
    "connected",
    "local",
    "reply",
    "bytes_up",
    "bytes_down",
    "duration_ms",
    "reason",
];
pub const UDP_KEYS: [&str; 3] = ["datagrams_up", "datagrams_down", "datagrams_dropped"];

/// Parses each line with `json.loads` (strict: one object, nothing after it), checks the keys
/// are exactly the documented ones and each value has its type, and prints per line
/// `key=KIND:VALUE` fields separated by tabs: KIND `n` null, `s` a string as hex UTF-8 (so a
/// tab or newline in a user name cannot break the format), `i` an integer, `f` a float.
/// `ts` is also given as `@ts_ms` (milliseconds since the epoch).
const CHECKER: &str = r#"
import datetime, json, re, sys
KEYS = sys.argv[1].split(",")
UDP = sys.argv[2].split(",")
REPLIES = {"succeeded", "general_failure", "not_allowed", "network_unreachable", "host_unreachable",
           "connection_refused", "ttl_expired", "command_not_supported", "address_type_not_supported"}
COMMANDS = {"connect", "bind", "udp_associate"}
def is_int(v): return isinstance(v, int) and not isinstance(v, bool)
def out(v):
    if v is None: return "n:"
    if isinstance(v, str): return "s:" + v.encode("utf-8").hex()
    if is_int(v): return "i:%d" % v
    if isinstance(v, float): return "f:%r" % v
    raise ValueError("unexpected value %r" % (v,))
for n, line in enumerate(sys.stdin.read().splitlines()):
    def fail(why): sys.exit("line %d: %s: %r" % (n + 1, why, line))
    try:
        obj = json.loads(line)
    except ValueError as e:
        fail("not JSON: %s" % e)
    if not isinstance(obj, dict): fail("not an object")
    keys = list(obj)
    if sorted(keys) not in (sorted(KEYS), sorted(KEYS + UDP)): fail("keys %s" % keys)
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["ts"]): fail("ts")
    ts = datetime.datetime.strptime(obj["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    for k in ["conn", "bytes_up", "bytes_down"] + [k for k in UDP if k in obj]:
        if not is_int(obj[k]) or obj[k] < 0: fail(k)
    if not (is_int(obj["duration_ms"]) or isinstance(obj["duration_ms"], float)) or obj["duration_ms"] < 0:
        fail("duration_ms")
    for k in ["client", "reason"]:
        if not isinstance(obj[k], str): fail(k)
    for k in ["user", "target", "connected", "local"]:
        if obj[k] is not None and not isinstance(obj[k], str): fail(k)
    if obj["reply"] is not None and obj["reply"] not in REPLIES: fail("reply")
    if obj["command"] is not None and obj["command"] not in COMMANDS: fail("command")
    fields = ["%s=%s" % (k, out(obj[k])) for k in keys]
    fields.append("@ts_ms=i:%d" % round(ts.timestamp() * 1000))
    print("\t".join(fields))
"#;

/// A value of an access record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
}

/// One access-log line, as Python's `json` read it.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// The keys in the order the line has them.
    pub keys: Vec<String>,
    pub values: BTreeMap<String, Value>,
    /// `ts` in milliseconds since the epoch.
    pub ts_ms: i64,
}

impl AccessRecord {
    fn get(&self, key: &str) -> &Value {
        self.values.get(key).unwrap_or_else(|| panic!("no {key} in {self:?}"))
    }

    /// A string value, `None` for null.
    pub fn str(&self, key: &str) -> Option<String> {
        match self.get(key) {
            Value::Null => None,
            Value::Str(s) => Some(s.clone()),
            other => panic!("{key} is {other:?}, not a string or null"),
        }
    }

    /// A whole number.
    pub fn int(&self, key: &str) -> i64 {
        match self.get(key) {
            Value::Int(n) => *n,
            other => panic!("{key} is {other:?}, not an integer"),
        }
    }

    /// Any number.
    pub fn number(&self, key: &str) -> f64 {
        match self.get(key) {
            Value::Int(n) => *n as f64,
            Value::Float(x) => *x,
            other => panic!("{key} is {other:?}, not a number"),
        }
    }
}

fn unhex(hex: &str) -> String {
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    String::from_utf8(bytes).expect("Python sends UTF-8")
}

/// Parse JSON access-log lines with python3's `json` module (see [`CHECKER`]); panics with its
/// complaint if a line is not an access record.
pub fn parse_access_lines(lines: &[String]) -> Vec<AccessRecord> {
    let mut child = Command::new("python3")
        .args(["-c", CHECKER, &ACCESS_KEYS.join(","), &UDP_KEYS.join(",")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (CI installs it)");
    let mut input = lines.join("\n");
    input.push('\n');
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python's json rejected the access log: {}\nlines: {lines:#?}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut record = AccessRecord { keys: Vec::new(), values: BTreeMap::new(), ts_ms: 0 };
            for field in line.split('\t') {
                let (key, value) = field.split_once('=').unwrap();
                let (kind, text) = value.split_once(':').unwrap();
                let value = match kind {
                    "n" => Value::Null,
                    "s" => Value::Str(unhex(text)),
                    "i" => Value::Int(text.parse().unwrap()),
                    "f" => Value::Float(text.parse().unwrap()),
                    _ => panic!("kind {kind}"),
                };
                if key == "@ts_ms" {
                    let Value::Int(ms) = value else { unreachable!() };
                    record.ts_ms = ms;
                } else {
                    record.keys.push(key.to_string());
                    record.values.insert(key.to_string(), value);
                }
            }
            record
        })
        .collect()
}

/// The access record of the connection from `client` (its line found by the client's address
/// on the proxy's stdout), waiting for it at most [`TIMEOUT`](super::TIMEOUT).
pub fn access_record_for(proxy: &super::ProxyProcess, client: std::net::SocketAddr) -> AccessRecord {
    let needle = format!("\"client\":\"{client}\"");
    let line = proxy.wait_for_stdout(&needle, super::TIMEOUT).unwrap_or_else(|| {
        panic!(
            "no access line for {client}; stdout: {:?}; stderr: {:?}",
            proxy.stdout.lock().unwrap(),
            proxy.stderr.lock().unwrap()
        )
    });
    parse_access_lines(&[line]).pop().unwrap()
}
