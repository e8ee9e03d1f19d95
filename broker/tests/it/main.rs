//! Integration tests: the real broker (`plantd_broker::run`) on free loopback ports, driven by
//! raw MDP peers in all three dialects.

mod common;

mod cli;
mod credit;
mod http;
mod limits;
mod mmi;
mod queueing;
mod robustness;
mod roundtrip;
mod tags;
mod workers;
