//! `plantd-bridge-nats`: bridges plantd's buses to NATS (DESIGN.md §8, `docs/bridge-nats.md`).
//!
//! Bus topics under chosen prefixes are published as NATS subjects (`org.plantd.metric.vm.cpu` →
//! `plantd.metric.vm.cpu`), and NATS subjects under chosen prefixes are published on a bus, with
//! payloads kept byte for byte. Two sites that both bridge both ways do not loop: exports carry
//! the bridge's origin id, and a bridge recognises its own imports on its bus. Optional
//! JetStream makes it durable.
//!
//! - [`config`]: the settings, [`BridgeConfig`].
//! - [`mapping`]: topics ↔ subjects, frames ↔ NATS bodies, the headers, loop memory.
//! - [`nats`]: the NATS connection (credentials, TLS, reconnects and their metrics).
//! - [`bridge`]: the export and import loops.
//! - [`metrics`]: Prometheus metrics.
//! - [`service`]: [`run`], wiring it all together.

pub mod bridge;
pub mod config;
pub mod error;
pub mod mapping;
pub mod metrics;
pub mod nats;
pub mod service;

pub use config::{
    BridgeConfig, BridgedBus, JetStreamSettings, NatsSettings, Secret, SubjectMapping,
};
pub use error::BridgeError;
pub use plantd_worker_sdk::Shutdown;
pub use service::run;

/// The configuration name: settings are `PLANTD_BRIDGE_NATS_*` and `bridge-nats.yaml`.
pub const SERVICE_NAME: &str = "bridge-nats";
