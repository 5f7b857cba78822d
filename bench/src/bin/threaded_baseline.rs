//! The threaded baseline ([`socksloop_bench::threaded_baseline`]) as a server of its own, for
//! `scripts/bench-compare.sh` and by hand:
//! `cargo run --release --bin threaded_baseline -- 127.0.0.1:1081`.

use std::net::{SocketAddr, TcpListener};

use socksloop_bench::threaded_baseline::serve;

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:1081".to_string());
    let addr: SocketAddr = addr.parse().expect("usage: threaded_baseline [IP:PORT]");
    // Two descriptors per relay: raise the soft open-file limit to the hard one (best effort).
    let _ = socksloop::limits::raise_nofile_limit();
    let listener = TcpListener::bind(addr).expect("cannot listen");
    eprintln!("threaded_baseline: listening on {}", listener.local_addr().expect("bound address"));
    if let Err(e) = serve(listener) {
        eprintln!("threaded_baseline: {e}");
    }
}
