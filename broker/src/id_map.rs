//! The maps that find a service or a worker by the bytes a peer sent (a service name, a routing
//! id) on every message.
//!
//! std's SipHash costs about 200 instructions per lookup of a short key, three lookups per
//! request (callgrind; `docs/benchmarks.md`, "Round two", target 1). foldhash is several
//! times cheaper and, seeded at random per map, still keeps a peer from predicting where its
//! chosen ids land.

use std::collections::HashMap;

/// A map keyed by peer-supplied bytes.
pub type IdMap<V> = HashMap<Box<[u8]>, V, foldhash::fast::RandomState>;
