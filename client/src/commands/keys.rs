//! `plant keys generate [--out NAME]`: a CURVE key pair for a broker, a service or a client, as
//! `NAME.key` (the secret key, Z85, mode 0600) and `NAME.pub` (the public key). Never overwrites
//! a key. The public key is printed, ready for the broker's allow list (`docs/security.md`); the
//! secret key is never printed.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use plantd_worker_sdk::curve::write_key_pair;
use serde_json::json;

use crate::context::Context;
use crate::error::CliError;
use crate::output::OutputFormat;

/// `plant keys` subcommands.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub.
    Generate(GenerateArgs),
}

/// `plant keys generate` arguments.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Path and base name of the files to write (NAME.key and NAME.pub).
    #[arg(long, default_value = "plantd")]
    pub out: PathBuf,
}

/// Runs a `plant keys` command.
pub fn run(ctx: &Context, command: KeysCommand) -> Result<(), CliError> {
    let KeysCommand::Generate(args) = command;
    let (keys, secret, public) = write_key_pair(&args.out).map_err(|e| {
        CliError::Input(format!(
            "cannot write the key pair {}: {e}",
            args.out.display()
        ))
    })?;
    let public_key = keys.public.to_z85();
    match ctx.output {
        OutputFormat::Json => println!(
            "{}",
            json!({
                "public_key": public_key,
                "secret_key_file": secret.display().to_string(),
                "public_key_file": public.display().to_string(),
            })
        ),
        OutputFormat::Text => {
            println!("{public_key}");
            eprintln!(
                "wrote {} (secret, mode 0600) and {}; allow it on a broker with a line \
                 `{public_key} <name> <policy>` in curve.authorized_keys",
                secret.display(),
                public.display()
            );
        }
    }
    Ok(())
}
