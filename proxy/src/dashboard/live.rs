//! The live overview: one poller asks the broker's MMI once per `dashboard.poll_ms`, however many
//! pages are open, and every open page receives the same snapshot over SSE
//! (`GET /dashboard/api/live`, event `snapshot`).
//!
//! A page holds exactly one SSE stream, so that several dashboard tabs fit in a browser's six
//! HTTP/1.1 connections per host: a page that also tails a bus asks for it on the same stream
//! (`?bus=metric&prefix=...`) and gets its messages as `bus` events beside the snapshots.
//!
//! Each poll is `mmi.broker`, `mmi.services`, and `mmi.workers` for each service that has
//! workers, plus the configured `/healthz` URLs. Throughput (requests/s) is the change of the
//! broker's `requests` counter between successive polls over the time between them; the last
//! `dashboard.history_secs` of it are kept here, so a page opened late sees the history. The
//! snapshot is serialized once per poll and shared (`tokio::sync::watch`): a page costs the
//! broker nothing and the proxy one string clone per poll.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use plantd_worker_sdk::client::{AsyncClient, BrokerInfo, ServiceInfo, WorkerInfo};
use plantd_worker_sdk::Shutdown;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::auth::session_of;
use super::health::{self, ProcessHealth};
use crate::config::DashboardConfig;
use crate::metrics::ProxyMetrics;
use crate::reply::ApiError;
use crate::router::AppState;

/// The latest snapshot, shared by every open page.
pub struct Live {
    sender: watch::Sender<Arc<str>>,
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

impl Live {
    /// No snapshot yet (pages get `{"ready":false}` until the first poll).
    pub fn new() -> Live {
        let (sender, _) = watch::channel(Arc::from(r#"{"ready":false}"#));
        Live { sender }
    }

    /// A receiver of every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<str>> {
        self.sender.subscribe()
    }

    /// How many pages are watching now.
    pub fn watchers(&self) -> usize {
        self.sender.receiver_count()
    }
}

/// A service (with the broker's per-service `requests` and `errors`) and its workers.
#[derive(Serialize)]
struct ServiceView {
    #[serde(flatten)]
    info: ServiceInfo,
    workers_list: Vec<WorkerInfo>,
}

/// One throughput point: Unix milliseconds and requests per second.
type Point = (u64, f64);

struct Throughput {
    last: Option<(Instant, u64)>,
    points: VecDeque<Point>,
    keep: usize,
}

impl Throughput {
    fn new(config: &DashboardConfig) -> Throughput {
        let keep = (config.history_secs * 1000).div_ceil(config.poll_ms.max(1)) as usize;
        Throughput {
            last: None,
            points: VecDeque::with_capacity(keep + 1),
            keep: keep.max(1),
        }
    }

    /// Adds the rate since the previous counter reading (none for the first).
    fn observe(&mut self, at: Instant, unix_ms: u64, requests: u64) {
        if let Some((then, before)) = self.last {
            let secs = at.saturating_duration_since(then).as_secs_f64();
            // A restarted broker's counter starts again from zero.
            let delta = requests.saturating_sub(before);
            if secs > 0.0 {
                self.points.push_back((unix_ms, delta as f64 / secs));
                while self.points.len() > self.keep {
                    self.points.pop_front();
                }
            }
        }
        self.last = Some((at, requests));
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Polls until `shutdown`, publishing a snapshot after each poll.
pub async fn poll(
    client: AsyncClient,
    config: DashboardConfig,
    live: Arc<Live>,
    metrics: ProxyMetrics,
    shutdown: Shutdown,
) {
    let period = Duration::from_millis(config.poll_ms);
    // A poll must not outlast the next one by much.
    let client =
        client.with_timeout(period.clamp(Duration::from_millis(200), Duration::from_secs(5)));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let health_timeout = period.clamp(Duration::from_millis(200), Duration::from_secs(2));
    let mut throughput = Throughput::new(&config);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let (mmi, health) = tokio::join!(
            poll_broker(&client),
            health::check_all(&http, &config.health, health_timeout)
        );
        metrics.dashboard_polls.inc();
        let snapshot = match mmi {
            Ok((broker, services)) => {
                let requests = broker.counters.get("requests").and_then(Value::as_u64);
                throughput.observe(Instant::now(), unix_ms(), requests.unwrap_or(0));
                snapshot(Some(&broker), &services, &throughput, &health, None)
            }
            Err(e) => snapshot(None, &[], &throughput, &health, Some(e.to_string())),
        };
        live.sender.send_replace(Arc::from(snapshot.to_string()));
    }
}

async fn poll_broker(
    client: &AsyncClient,
) -> Result<(BrokerInfo, Vec<ServiceView>), plantd_worker_sdk::ClientError> {
    let (broker, services) = tokio::join!(client.broker_info(), client.services());
    let (broker, services) = (broker?, services?);
    let lists = services.iter().map(|s| async move {
        match s.workers {
            0 => Vec::new(),
            // A service whose last worker just left answers 404: no workers.
            _ => client.workers(&s.name).await.unwrap_or_default(),
        }
    });
    let lists = futures_util::future::join_all(lists).await;
    let views = services
        .into_iter()
        .zip(lists)
        .map(|(info, workers_list)| ServiceView { info, workers_list })
        .collect();
    Ok((broker, views))
}

fn snapshot(
    broker: Option<&BrokerInfo>,
    services: &[ServiceView],
    throughput: &Throughput,
    health: &[ProcessHealth],
    error: Option<String>,
) -> Value {
    json!({
        "ready": true,
        "time_ms": unix_ms(),
        "broker": broker,
        "services": services,
        "throughput": throughput.points,
        "health": health,
        "error": error,
    })
}

/// The query of `GET /dashboard/api/live`.
#[derive(Debug, Default, Deserialize)]
pub struct LiveQuery {
    /// A bus to tail on the same stream (`metric`, `event`, ...); none by default.
    #[serde(default)]
    pub bus: Option<String>,
    /// The topic prefix of that tail (default: every message).
    #[serde(default)]
    pub prefix: String,
}

/// `GET /dashboard/api/live[?bus=&prefix=]`: the snapshots as SSE, and the bus tail asked for
/// (needs the session). An unknown bus is `404 BUS_NOT_FOUND`.
pub async fn stream(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Option<Query<LiveQuery>>,
) -> Result<Response, ApiError> {
    let authed = session_of(&app, &headers)?;
    let Query(query) = query.unwrap_or_default();
    let tail = match query.bus.as_deref() {
        Some(bus) => Some(crate::buses::open_tail(&app, bus, &query.prefix)?),
        None => None,
    };
    let receiver = app.dashboard.live.subscribe();
    let gauge = app.metrics.sse_streams.with_label_values(&["dashboard"]);
    gauge.inc();
    let feed = Feed {
        receiver,
        tail,
        app: app.clone(),
        session: authed.id,
        first: true,
        _guard: crate::buses::StreamGuard(gauge),
    };
    Ok(Sse::new(events(feed))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// What one page's stream follows.
struct Feed {
    receiver: watch::Receiver<Arc<str>>,
    tail: Option<plantd_worker_sdk::bus::SubscriberStream>,
    app: Arc<AppState>,
    session: String,
    first: bool,
    _guard: crate::buses::StreamGuard,
}

/// The next message of the tail, if the page asked for one (else never).
async fn next_message(
    tail: &mut Option<plantd_worker_sdk::bus::SubscriberStream>,
) -> Option<Result<plantd_worker_sdk::bus::BusMessage, plantd_worker_sdk::bus::BusError>> {
    match tail {
        Some(tail) => tail.next().await,
        None => std::future::pending().await,
    }
}

/// The current snapshot, then one per poll and each bus message as it comes, while the session
/// lasts (an open page counts as using it): the stream ends at logout, when the session ends
/// otherwise, or at shutdown. A bus message is `{topic, payload}` as the API's tail sends it;
/// a payload that is not a frame list is a `bus_error` event.
fn events(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(feed, |mut feed| async move {
        if !feed.first {
            let event = tokio::select! {
                _ = feed.app.shutdown.cancelled() => return None,
                changed = feed.receiver.changed() => {
                    changed.ok()?;
                    None
                }
                // A tail that ended (the proxy is stopping) leaves the snapshots.
                Some(message) = next_message(&mut feed.tail) => Some(match message {
                    Ok(message) => Event::default()
                        .event("bus")
                        .data(crate::buses::message_json(&message).to_string()),
                    Err(e) => Event::default()
                        .event("bus_error")
                        .data(json!({"message": e.to_string()}).to_string()),
                }),
            };
            if let Some(event) = event {
                return Some((Ok(event), feed));
            }
            // Checked once per poll, not per bus message: an ended session's stream stops
            // within a poll.
            feed.app.dashboard.sessions.get(&feed.session)?;
        }
        feed.first = false;
        let data = feed.receiver.borrow_and_update().clone();
        let event = Event::default().event("snapshot").data(&*data);
        Some((Ok(event), feed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_the_counter_rate_and_keeps_its_window() {
        let config = DashboardConfig {
            poll_ms: 1000,
            history_secs: 3,
            ..DashboardConfig::default()
        };
        let mut t = Throughput::new(&config);
        let start = Instant::now();
        t.observe(start, 0, 100);
        assert!(t.points.is_empty(), "one reading is no rate");
        t.observe(start + Duration::from_secs(2), 2000, 300);
        assert_eq!(t.points.back(), Some(&(2000, 100.0)));
        for i in 3..10 {
            t.observe(start + Duration::from_secs(i), i * 1000, 300);
        }
        assert_eq!(t.points.len(), 3);
        assert_eq!(t.points.back(), Some(&(9000, 0.0)));
        // A restarted broker: no negative rate.
        t.observe(start + Duration::from_secs(10), 10_000, 5);
        assert_eq!(t.points.back(), Some(&(10_000, 0.0)));
    }
}
