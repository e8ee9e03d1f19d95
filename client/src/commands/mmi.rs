//! The broker's own answers (MMI): `plant services`, `plant service <name>`,
//! `plant workers <service>` and `plant broker`.

use clap::Args;
use plantd_worker_sdk::client::{Client, ClientError};
use serde_json::json;

use crate::context::{format_duration, Access, Context};
use crate::error::CliError;
use crate::output::{self, OutputFormat};

/// Arguments of `plant service`.
#[derive(Args, Debug)]
pub struct ServiceArgs {
    /// Service name.
    pub name: String,
}

/// Arguments of `plant workers`.
#[derive(Args, Debug)]
pub struct WorkersArgs {
    /// Service name.
    pub service: String,
}

/// Runs an MMI query, explaining failures as coming from the broker itself.
fn query<T>(
    ctx: &Context,
    client: &Client,
    mmi_service: &str,
    call: impl FnOnce(&Client) -> Result<T, ClientError>,
) -> Result<T, CliError> {
    call(client).map_err(|e| ctx.request_error(client, mmi_service, e))
}

/// `plant services`: every service the broker knows, with worker and queue counts.
pub fn services(ctx: &Context) -> Result<(), CliError> {
    let client = ctx.client(Access::Read)?;
    let services = query(ctx, &client, "mmi.services", Client::services)?;
    match ctx.output {
        OutputFormat::Json => output::print_json(&json!(services)),
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = services
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.workers.to_string(),
                        s.idle.to_string(),
                        s.queued.to_string(),
                    ]
                })
                .collect();
            output::print_table(&["SERVICE", "WORKERS", "IDLE", "QUEUED"], &rows)
        }
    }
}

/// `plant service <name>`: whether a service has a registered worker. Exits non-zero if not.
pub fn service(ctx: &Context, args: ServiceArgs) -> Result<(), CliError> {
    let client = ctx.client(Access::Read)?;
    let available = query(ctx, &client, "mmi.service", |c| {
        c.service_available(&args.name)
    })?;
    match ctx.output {
        OutputFormat::Json => {
            output::print_json(&json!({ "service": args.name, "available": available }))?
        }
        OutputFormat::Text if available => {
            output::print_line(&format!("{}: available", args.name))?
        }
        OutputFormat::Text => {}
    }
    if available {
        Ok(())
    } else {
        Err(CliError::Request {
            service: args.name,
            source: ClientError::NotFound,
        })
    }
}

/// `plant workers <service>`: the workers registered for a service.
pub fn workers(ctx: &Context, args: WorkersArgs) -> Result<(), CliError> {
    let client = ctx.client(Access::Read)?;
    let workers = client.workers(&args.service).map_err(|e| match e {
        ClientError::NotFound => CliError::Request {
            service: args.service.clone(),
            source: e,
        },
        other => ctx.request_error(&client, "mmi.workers", other),
    })?;
    match ctx.output {
        OutputFormat::Json => output::print_json(&json!(workers)),
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = workers
                .iter()
                .map(|w| {
                    vec![
                        w.id.clone(),
                        w.state.clone(),
                        w.dialect.clone(),
                        w.requests.to_string(),
                        format!("{}ms ago", w.last_seen_ms_ago),
                    ]
                })
                .collect();
            output::print_table(&["ID", "STATE", "DIALECT", "REQUESTS", "LAST SEEN"], &rows)
        }
    }
}

/// `plant broker`: version, uptime, counts, counters and buses of the broker.
pub fn broker(ctx: &Context) -> Result<(), CliError> {
    let client = ctx.client(Access::Read)?;
    let info = query(ctx, &client, "mmi.broker", Client::broker_info)?;
    if ctx.output == OutputFormat::Json {
        return output::print_json(&json!(info));
    }
    let uptime = std::time::Duration::from_secs_f64(info.uptime_secs.max(0.0));
    let mut lines = vec![
        format!("version   {}", info.version),
        format!("endpoint  {}", info.endpoint),
        format!("uptime    {}", format_duration(uptime)),
        format!("services  {}", info.services),
        format!("workers   {}", info.workers),
        format!("queued    {}", info.queued),
    ];
    if !info.counters.is_empty() {
        lines.push("counters:".to_owned());
        let width = info.counters.keys().map(String::len).max().unwrap_or(0);
        for (name, value) in &info.counters {
            lines.push(format!("  {name:<width$}  {value}"));
        }
    }
    if !info.buses.is_empty() {
        lines.push("buses:".to_owned());
        for bus in &info.buses {
            lines.push(format!(
                "  {}  publish {}  subscribe {}",
                bus.name, bus.frontend, bus.backend
            ));
        }
    }
    output::print_line(&lines.join("\n"))
}
