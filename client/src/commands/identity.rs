//! `plant identity` and `plant audit`: every operation of the identity service
//! (`org.plantd.Identity`) from the command line.
//!
//! `plant identity <category> <operation> [FIELD=VALUE | JSON]...` sends
//! `[category, operation, json]` with the saved token attached: `plant identity user create
//! username=alice email=alice@example.com --password-stdin`, `plant identity role create
//! name=reader 'permissions=["state:data:read"]'`, `plant identity user assign_role user_id=2
//! role_id=3`. Values are JSON when they parse (numbers, arrays) and strings otherwise; a JSON
//! object argument is merged whole. Operation names take `-` or `_` (`assign-role`). The
//! reply's `data` is printed as JSON; an error reply exits 1 with its code.

use std::io::BufRead;

use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

use super::state::parse_value;
use crate::context::{Access, Context};
use crate::error::CliError;
use crate::{output, session};

/// The identity service's MDP name.
pub const IDENTITY_SERVICE: &str = "org.plantd.Identity";

/// Operation families of the identity service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Category {
    /// Login, tokens, keys (`login`, `refresh`, `logout`, `validate`, `change_password`, ...).
    Auth,
    /// Users.
    User,
    /// Organizations.
    #[value(alias = "organization")]
    Org,
    /// Roles and permission checks.
    Role,
    /// API keys for machines.
    #[value(name = "api-key", alias = "api_key")]
    ApiKey,
    /// The audit log.
    Audit,
    /// The service's own health.
    Health,
}

impl Category {
    /// The category frame as identity names it.
    pub fn wire_name(self) -> &'static str {
        match self {
            Category::Auth => "auth",
            Category::User => "user",
            Category::Org => "organization",
            Category::Role => "role",
            Category::ApiKey => "api_key",
            Category::Audit => "audit",
            Category::Health => "health",
        }
    }
}

/// Options of `plant identity`.
#[derive(Args, Debug, Clone)]
pub struct IdentityArgs {
    /// Operation family.
    pub category: Category,
    /// Operation (`create`, `get`, `list`, `assign_role`, ...).
    pub operation: String,
    /// Request fields: `name=value` (value parsed as JSON when it parses) or a JSON object.
    pub fields: Vec<String>,
    /// Read the `password` field from the first line of stdin (never put passwords in argv).
    #[arg(long)]
    pub password_stdin: bool,
}

/// Options of `plant audit list`.
#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// Only `list` exists.
    #[arg(value_parser = ["list"])]
    pub operation: String,
    /// Earliest time (RFC 3339, Unix seconds).
    #[arg(long)]
    pub since: Option<String>,
    /// Latest time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this actor (user id or name).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action (`login`, `login_failed`, ...).
    #[arg(long)]
    pub action: Option<String>,
    /// At most this many entries.
    #[arg(long)]
    pub limit: Option<u64>,
}

/// The body of `fields`: `name=value` pairs and JSON objects merged in order.
pub fn body_of(fields: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut body = Map::new();
    for field in fields {
        if field.trim_start().starts_with('{') {
            match serde_json::from_str::<Value>(field) {
                Ok(Value::Object(map)) => body.extend(map),
                _ => return Err(CliError::Input(format!("not a JSON object: {field}"))),
            }
        } else if let Some((name, value)) = field.split_once('=') {
            body.insert(name.to_owned(), parse_value(value, false));
        } else {
            return Err(CliError::Input(format!(
                "expected name=value or a JSON object, got {field:?}"
            )));
        }
    }
    Ok(body)
}

/// Whether an identity operation only reads (and may be resent).
fn access(operation: &str) -> Access {
    match operation {
        "get" | "list" | "members" | "check_permission" | "validate" | "public_keys"
        | "notices" | "check" => Access::Read,
        _ => Access::Write,
    }
}

/// Runs `plant identity ...`.
pub fn run(ctx: &Context, args: IdentityArgs) -> Result<(), CliError> {
    let operation = args.operation.replace('-', "_");
    let mut body = body_of(&args.fields)?;
    if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        body.insert(
            "password".into(),
            json!(line.trim_end_matches(['\r', '\n'])),
        );
    }
    session::attach(ctx, &mut body)?;
    let data = call(
        ctx,
        args.category.wire_name(),
        &operation,
        Value::Object(body),
        access(&operation),
    )?;
    output::print_json(&data)
}

/// Runs `plant audit list ...`.
pub fn run_audit(ctx: &Context, args: AuditArgs) -> Result<(), CliError> {
    let mut body = Map::new();
    for (name, value) in [
        ("since", args.since.map(Value::from)),
        ("until", args.until.map(Value::from)),
        ("actor", args.actor.map(Value::from)),
        ("action", args.action.map(Value::from)),
        ("limit", args.limit.map(Value::from)),
    ] {
        if let Some(value) = value {
            body.insert(name.into(), value);
        }
    }
    session::attach(ctx, &mut body)?;
    let data = call(ctx, "audit", "list", Value::Object(body), Access::Read)?;
    output::print_json(&data)
}

/// Sends `[category, operation, body]` to identity and returns the reply's `data`.
pub fn call(
    ctx: &Context,
    category: &str,
    operation: &str,
    body: Value,
    access: Access,
) -> Result<Value, CliError> {
    let client = ctx.client(access)?;
    let reply = client
        .request(
            IDENTITY_SERVICE,
            vec![
                category.as_bytes().to_vec(),
                operation.as_bytes().to_vec(),
                body.to_string().into_bytes(),
            ],
        )
        .map_err(|e| ctx.request_error(&client, IDENTITY_SERVICE, e))?;
    super::reply::data(IDENTITY_SERVICE, &reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_a_json_body() {
        let fields: Vec<String> = [
            "username=alice",
            "user_id=2",
            r#"permissions=["state:data:read"]"#,
            r#"{"email":"a@example.com"}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            Value::Object(body_of(&fields).unwrap()),
            json!({"username": "alice", "user_id": 2, "permissions": ["state:data:read"],
                   "email": "a@example.com"})
        );
        assert!(body_of(&["nope".into()]).is_err());
        assert!(body_of(&["{bad".into()]).is_err());
        assert_eq!(access("list"), Access::Read);
        assert_eq!(access("create"), Access::Write);
    }
}
