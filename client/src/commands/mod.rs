//! One module per `plant` command group; each exposes its clap `Args` (or `Subcommand`) type and a
//! `run(&Context, args)` that prints results on stdout and returns a [`CliError`](crate::error::CliError).

pub mod auth;
pub mod bench;
pub mod bus;
pub mod echo;
pub mod identity;
pub mod keys;
pub mod logger;
pub mod mmi;
mod reply;
pub mod request;
pub mod state;
