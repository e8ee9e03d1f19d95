//! The broker's own answers (MMI): `plant services` (`--all`: of every listed broker, merged),
//! `plant service <name>`, `plant workers <service>` and `plant broker`.

use clap::Args;
use plantd_worker_sdk::client::{Client, ClientError, ServiceInfo};
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

/// Arguments of `plant services`.
#[derive(Args, Debug)]
pub struct ServicesArgs {
    /// Ask every broker --endpoint lists (comma-separated), not only the one failover picks,
    /// and merge their answers.
    #[arg(long)]
    pub all: bool,
}

/// `plant services`: every service the broker knows, with worker and queue counts and the
/// requests and errors it counted for each.
pub fn services(ctx: &Context, args: ServicesArgs) -> Result<(), CliError> {
    if args.all {
        return all_services(ctx);
    }
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
                        s.requests.to_string(),
                        s.errors.to_string(),
                    ]
                })
                .collect();
            output::print_table(
                &["SERVICE", "WORKERS", "IDLE", "QUEUED", "REQUESTS", "ERRORS"],
                &rows,
            )
        }
    }
}

/// One broker's answer to `plant services --all`.
struct BrokerServices {
    endpoint: String,
    services: Result<Vec<ServiceInfo>, CliError>,
}

/// `plant services --all`: asks each listed broker in turn (one attempt each: a broker that is
/// down is reported, not retried), then shows one row per service: at how many brokers it has
/// workers, its workers per broker, and its queue summed over them.
fn all_services(ctx: &Context) -> Result<(), CliError> {
    let endpoints = plantd_worker_sdk::config::broker_endpoints(&ctx.endpoint);
    let answers: Vec<BrokerServices> = endpoints
        .into_iter()
        .map(|endpoint| {
            let one = Context {
                endpoint: endpoint.clone(),
                retries: Some(0),
                ..ctx.clone()
            };
            let services = one
                .client(Access::Read)
                .and_then(|client| query(&one, &client, "mmi.services", Client::services));
            BrokerServices { endpoint, services }
        })
        .collect();
    if answers.iter().all(|a| a.services.is_err()) {
        return Err(answers
            .into_iter()
            .next()
            .and_then(|a| a.services.err())
            .unwrap_or_else(|| CliError::Input("--endpoint names no broker".to_owned())));
    }
    let merged = merge_services(&answers);
    match ctx.output {
        OutputFormat::Json => {
            let brokers: Vec<_> = answers
                .iter()
                .map(|a| match &a.services {
                    Ok(services) => json!({ "endpoint": a.endpoint, "services": services }),
                    Err(e) => json!({ "endpoint": a.endpoint, "error": e.to_string() }),
                })
                .collect();
            output::print_json(&json!({ "brokers": brokers, "services": merged }))
        }
        OutputFormat::Text => {
            for answer in &answers {
                if let Err(e) = &answer.services {
                    eprintln!("warning: {}: {e}", answer.endpoint);
                }
            }
            let rows: Vec<Vec<String>> = merged
                .iter()
                .map(|m| {
                    vec![
                        m.name.clone(),
                        format!("{}/{}", m.brokers, answers.len()),
                        m.workers
                            .iter()
                            .map(|w| w.map_or("-".to_owned(), |w| w.to_string()))
                            .collect::<Vec<_>>()
                            .join(" "),
                        m.queued.to_string(),
                        m.requests.to_string(),
                        m.errors.to_string(),
                    ]
                })
                .collect();
            output::print_table(
                &[
                    "SERVICE", "BROKERS", "WORKERS", "QUEUED", "REQUESTS", "ERRORS",
                ],
                &rows,
            )
        }
    }
}

/// One service across every broker of `plant services --all`.
#[derive(Debug, PartialEq, serde::Serialize)]
struct MergedService {
    name: String,
    /// Brokers at which it has at least one worker.
    brokers: usize,
    /// Its workers at each broker, in --endpoint order (`None`: unknown there, or the broker did
    /// not answer).
    workers: Vec<Option<u64>>,
    /// Requests waiting for a worker, summed over the brokers.
    queued: u64,
    /// Requests the brokers received for it, summed.
    requests: u64,
    /// Of those, the ones answered with an error, summed.
    errors: u64,
}

/// Merges the brokers' service lists, by service name, in name order.
fn merge_services(answers: &[BrokerServices]) -> Vec<MergedService> {
    let mut merged: std::collections::BTreeMap<&str, MergedService> = Default::default();
    for (index, answer) in answers.iter().enumerate() {
        let Ok(services) = &answer.services else {
            continue;
        };
        for service in services {
            let entry = merged
                .entry(&service.name)
                .or_insert_with(|| MergedService {
                    name: service.name.clone(),
                    brokers: 0,
                    workers: vec![None; answers.len()],
                    queued: 0,
                    requests: 0,
                    errors: 0,
                });
            entry.workers[index] = Some(service.workers);
            entry.brokers += usize::from(service.workers > 0);
            entry.queued += service.queued;
            entry.requests += service.requests;
            entry.errors += service.errors;
        }
    }
    merged.into_values().collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, workers: u64, queued: u64) -> ServiceInfo {
        ServiceInfo {
            name: name.to_owned(),
            workers,
            idle: workers,
            queued,
            requests: 10 * workers + queued,
            errors: queued,
        }
    }

    #[test]
    fn services_of_several_brokers_merge_by_name_and_a_silent_broker_shows_as_unknown() {
        let answers = [
            BrokerServices {
                endpoint: "tcp://a:1".to_owned(),
                services: Ok(vec![info("echo", 2, 1), info("state", 1, 0)]),
            },
            BrokerServices {
                endpoint: "tcp://b:1".to_owned(),
                services: Err(CliError::Input("down".to_owned())),
            },
            BrokerServices {
                endpoint: "tcp://c:1".to_owned(),
                services: Ok(vec![info("echo", 2, 3), info("state", 0, 0)]),
            },
        ];
        assert_eq!(
            merge_services(&answers),
            [
                MergedService {
                    name: "echo".to_owned(),
                    brokers: 2,
                    workers: vec![Some(2), None, Some(2)],
                    queued: 4,
                    requests: 44,
                    errors: 4,
                },
                MergedService {
                    name: "state".to_owned(),
                    brokers: 1,
                    workers: vec![Some(1), None, Some(0)],
                    queued: 0,
                    requests: 10,
                    errors: 0,
                },
            ]
        );
    }
}
