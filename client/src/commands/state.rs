//! `plant state`: the state service (`org.plantd.State`) from the command line.
//!
//! Every subcommand sends one `[operation, json]` request and prints the reply's `data` as JSON on
//! stdout (whatever `--output` says: the data is JSON). An error reply becomes a one-line error
//! (`error: SCOPE_NOT_FOUND: scope 'x' does not exist`) and exit 1. Values are parsed as JSON when
//! they are valid JSON and sent as strings otherwise; `--string` always sends a string. Reads
//! (`get`, `list`, `list-scopes`) are resent after a broker restart; writes are not
//! ([`StateCommand::access`]).

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::context::{Access, Context};
use crate::error::CliError;
use crate::output;

/// The state service's MDP name.
pub const STATE_SERVICE: &str = "org.plantd.State";
/// The scope used when none is given, as in the Go CLI.
pub const DEFAULT_SCOPE: &str = "org.plantd.Client";

/// Options of `plant state`.
#[derive(Args, Debug, Clone)]
pub struct StateArgs {
    /// Scope (namespace) to work in.
    #[arg(long, visible_alias = "service", global = true, default_value = DEFAULT_SCOPE)]
    pub scope: String,
    /// Send values as strings even when they parse as JSON.
    #[arg(long, global = true)]
    pub string: bool,
    #[command(subcommand)]
    pub command: StateCommand,
}

/// `plant state` subcommands.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum StateCommand {
    /// Print the value of a key.
    Get {
        /// Key to read.
        key: String,
    },
    /// Set a key (the scope is created if needed).
    Set {
        /// Key to write.
        key: String,
        /// Value: JSON if it parses as JSON, otherwise a string.
        value: String,
    },
    /// Delete a key.
    Delete {
        /// Key to delete.
        key: String,
    },
    /// List the keys of the scope.
    List,
    /// Create the scope.
    CreateScope,
    /// Delete the scope and all its keys.
    DeleteScope,
    /// List every scope.
    ListScopes,
    /// Write an online backup of the whole database (path on the state service's host; relative
    /// paths go to its backup directory).
    Backup {
        /// Target file; must not exist.
        path: String,
    },
}

impl StateCommand {
    /// Whether the command only reads (and is resent after a broker restart) or writes.
    pub fn access(&self) -> Access {
        match self {
            StateCommand::Get { .. } | StateCommand::List | StateCommand::ListScopes => {
                Access::Read
            }
            StateCommand::Set { .. }
            | StateCommand::Delete { .. }
            | StateCommand::CreateScope
            | StateCommand::DeleteScope
            | StateCommand::Backup { .. } => Access::Write,
        }
    }
}

/// The value to send for `raw`: JSON when it parses (unless `force_string`), else a string.
pub fn parse_value(raw: &str, force_string: bool) -> Value {
    if force_string {
        return Value::String(raw.to_owned());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// The `(operation, body)` a command sends.
pub fn request_for(args: &StateArgs) -> (&'static str, Value) {
    let scope = || json!(args.scope);
    let (op, body) = match &args.command {
        StateCommand::Get { key } => ("state-get", json!({"service": scope(), "key": key})),
        StateCommand::Set { key, value } => (
            "state-set",
            json!({"service": scope(), "key": key, "value": parse_value(value, args.string)}),
        ),
        StateCommand::Delete { key } => ("delete", json!({"service": scope(), "key": key})),
        StateCommand::List => ("list-keys", json!({"service": scope()})),
        StateCommand::CreateScope => ("create-scope", json!({"service": scope()})),
        StateCommand::DeleteScope => ("delete-scope", json!({"service": scope()})),
        StateCommand::ListScopes => ("list-scopes", Value::Object(Map::new())),
        StateCommand::Backup { path } => ("backup", json!({"path": path})),
    };
    (op, body)
}

/// Runs `plant state ...` and prints the reply's data.
pub fn run(ctx: &Context, args: StateArgs) -> Result<(), CliError> {
    let (op, mut body) = request_for(&args);
    if let Some(map) = body.as_object_mut() {
        crate::session::attach(ctx, map)?;
    }
    let client = ctx.client(args.command.access())?;
    let reply = client
        .request(
            STATE_SERVICE,
            vec![op.as_bytes().to_vec(), body.to_string().into_bytes()],
        )
        .map_err(|e| ctx.request_error(&client, STATE_SERVICE, e))?;
    output::print_json(&super::reply::data(STATE_SERVICE, &reply)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: StateCommand) -> StateArgs {
        StateArgs {
            scope: DEFAULT_SCOPE.into(),
            string: false,
            command,
        }
    }

    #[test]
    fn values_are_json_when_they_parse_and_strings_otherwise() {
        assert_eq!(parse_value("42", false), json!(42));
        assert_eq!(parse_value("{\"a\":1}", false), json!({"a": 1}));
        assert_eq!(parse_value("hello world", false), json!("hello world"));
        assert_eq!(parse_value("42", true), json!("42"));
    }

    #[test]
    fn commands_map_to_go_operation_names_and_fields() {
        let a = args(StateCommand::Set {
            key: "k".into(),
            value: "true".into(),
        });
        assert_eq!(
            request_for(&a),
            (
                "state-set",
                json!({"service": DEFAULT_SCOPE, "key": "k", "value": true})
            )
        );
        assert_eq!(request_for(&args(StateCommand::List)).0, "list-keys");
        assert_eq!(a.command.access(), Access::Write);
        assert_eq!(StateCommand::ListScopes.access(), Access::Read);
        assert_eq!(
            request_for(&args(StateCommand::ListScopes)),
            ("list-scopes", json!({}))
        );
    }
}
