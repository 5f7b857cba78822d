//! The contract every `Parse` parser must keep (see `src/protocol/mod.rs`), checked on one input.

use std::fmt::Debug;

use socksloop::protocol::Parse;

/// * no panic (libFuzzer reports one as a crash);
/// * Complete: `consumed <= input.len()`, and re-parsing exactly `&input[..consumed]` gives the
///   same Complete (the message never depends on bytes after it);
/// * Partial: `&input[..len - 1]` is Partial too (a parser never decides on fewer bytes than
///   it was once undecided on).
pub fn check_parse<'a, T: PartialEq + Debug, E: PartialEq + Debug>(
    input: &'a [u8],
    parse: impl Fn(&'a [u8]) -> Parse<T, E>,
) {
    match parse(input) {
        Parse::Complete(msg, used) => {
            assert!(used <= input.len(), "consumed {used} of {} bytes", input.len());
            assert_eq!(parse(&input[..used]), Parse::Complete(msg, used), "re-parse of the consumed bytes");
        }
        Parse::Partial => {
            if let Some((_, shorter)) = input.split_last() {
                assert_eq!(parse(shorter), Parse::Partial, "Partial input with a Partial-breaking prefix");
            }
        }
        Parse::Invalid(_) => {}
    }
}
