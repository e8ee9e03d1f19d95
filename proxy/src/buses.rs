//! Buses over HTTP: `GET /api/v1/buses/{bus}?prefix=` tails a bus as SSE (one event per
//! message, MessagePack or JSON payloads shown as JSON, anything else as base64), and
//! `POST /api/v1/buses/{bus}/{topic}` publishes a JSON body as a MessagePack payload (the token
//! needs `bus:publish`).
//!
//! Each tail is a SUB socket of its own, subscribed to the prefix, so the broker filters; it
//! closes when the client goes away or the proxy shuts down. Publishers are created at startup,
//! one per bus, so they are connected by the time the first POST comes.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::stream::{self, Stream};
use plantd_worker_sdk::bus::{BusMessage, ConnectionMonitor, Publisher, Subscriber};
use plantd_worker_sdk::curve::ClientCurve;
use plantd_worker_sdk::protocol::bus::{encode_msgpack, parse_payload};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::BusEndpoints;
use crate::error::ProxyError;
use crate::limits;
use crate::reply::{status_for_code, ApiError};
use crate::router::{body_bytes, AppState};

/// The permission `POST /api/v1/buses/...` needs.
pub const PUBLISH_PERMISSION: &str = "bus:publish";
/// Messages a tail's subscriber queues before dropping (a slow HTTP client must not grow the
/// proxy without bound).
const TAIL_HIGH_WATER_MARK: i32 = 10_000;
/// Messages between the subscriber thread and the HTTP stream.
const TAIL_CHANNEL: usize = 256;

/// The buses the proxy knows, with a publisher for each that has a frontend.
pub struct Buses {
    buses: Vec<Bus>,
}

struct Bus {
    endpoints: BusEndpoints,
    /// A zmq socket is not `Sync`; a publish is a non-blocking send, so the lock is brief.
    publisher: Option<Mutex<(Publisher, ConnectionMonitor)>>,
}

impl Buses {
    /// Connects a publisher to each bus frontend (ZeroMQ connects in the background).
    pub fn connect(
        buses: &[BusEndpoints],
        curve: Option<&ClientCurve>,
    ) -> Result<Buses, ProxyError> {
        let buses = buses
            .iter()
            .map(|endpoints| {
                let publisher = match endpoints.frontend.is_empty() {
                    true => None,
                    false => Some(Mutex::new(Publisher::connect_with(
                        &endpoints.frontend,
                        plantd_worker_sdk::bus::DEFAULT_HIGH_WATER_MARK,
                        curve,
                    )?)),
                };
                Ok(Bus {
                    endpoints: endpoints.clone(),
                    publisher,
                })
            })
            .collect::<Result<_, ProxyError>>()?;
        Ok(Buses { buses })
    }

    fn get(&self, name: &str) -> Result<&Bus, ApiError> {
        self.buses
            .iter()
            .find(|b| b.endpoints.name == name)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "BUS_NOT_FOUND",
                    format!("no bus named {name:?}"),
                )
            })
    }
}

/// The query of a bus tail.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TailQuery {
    /// Topic prefix to receive (default: every message).
    #[serde(default)]
    pub prefix: String,
}

/// `GET /api/v1/buses/{bus}`: the bus's messages as SSE.
#[utoipa::path(
    get,
    path = "/api/v1/buses/{bus}",
    tag = "buses",
    params(("bus" = String, Path, description = "bus name: state, event or metric"), TailQuery),
    responses(
        (status = 200, description = "SSE: one `message` event per bus message, data {topic, payload}", content_type = "text/event-stream"),
        (status = 404, description = "no such bus"),
    )
)]
pub async fn tail(
    State(app): State<Arc<AppState>>,
    Path(bus): Path<String>,
    query: Option<Query<TailQuery>>,
) -> Result<Response, ApiError> {
    let Query(query) = query.unwrap_or_default();
    let messages = open_tail(&app, &bus, &query.prefix)?;
    let gauge = app.metrics.sse_streams.with_label_values(&["bus"]);
    gauge.inc();
    let stop = app.shutdown.clone();
    let events = tail_events(messages, stop, StreamGuard(gauge));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A subscriber to `bus` under `prefix`, as a stream (the API's tail and the dashboard's live
/// feed). `404 BUS_NOT_FOUND` for a bus the proxy does not know.
pub(crate) fn open_tail(
    app: &AppState,
    bus: &str,
    prefix: &str,
) -> Result<plantd_worker_sdk::bus::SubscriberStream, ApiError> {
    let bus = app.buses.get(bus)?;
    let unavailable = |e: plantd_worker_sdk::bus::BusError| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "BUS_UNAVAILABLE",
            e.to_string(),
        )
    };
    let (subscriber, _monitor) = Subscriber::connect_with(
        &bus.endpoints.backend,
        TAIL_HIGH_WATER_MARK,
        app.curve.as_ref(),
    )
    .map_err(unavailable)?;
    subscriber.subscribe(prefix).map_err(unavailable)?;
    Ok(subscriber.into_stream(TAIL_CHANNEL))
}

/// Decrements an open-streams gauge when the stream is dropped.
pub(crate) struct StreamGuard(pub(crate) prometheus::IntGauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn tail_events(
    messages: plantd_worker_sdk::bus::SubscriberStream,
    stop: plantd_worker_sdk::Shutdown,
    guard: StreamGuard,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(
        (messages, stop, guard),
        |(mut messages, stop, guard)| async move {
            let next = tokio::select! {
                _ = stop.cancelled() => None,
                next = messages.next() => next,
            };
            let event = match next? {
                Ok(message) => Event::default()
                    .event("message")
                    .data(message_json(&message).to_string()),
                // A payload that is not even a frame list: say so and go on.
                Err(e) => Event::default()
                    .event("error")
                    .data(json!({"message": e.to_string()}).to_string()),
            };
            Some((Ok(event), (messages, stop, guard)))
        },
    )
}

/// A bus message as JSON: `{topic, payload}`, plus `frames` when it has more than one payload
/// frame.
pub fn message_json(message: &BusMessage) -> Value {
    let mut value = json!({
        "topic": message.topic,
        "payload": payload_json(message.body()),
    });
    if message.payload.len() > 1 {
        value["frames"] = message
            .payload
            .iter()
            .map(|f| payload_json(f))
            .collect::<Vec<_>>()
            .into();
    }
    value
}

/// A payload as JSON: MessagePack or JSON as the value, anything else `{"base64": ...}`.
pub fn payload_json(bytes: &[u8]) -> Value {
    match parse_payload(bytes) {
        Some((_, value)) => value,
        None => json!({"base64": STANDARD.encode(bytes)}),
    }
}

/// `POST /api/v1/buses/{bus}/{topic}`: publishes the JSON body as MessagePack.
#[utoipa::path(
    post,
    path = "/api/v1/buses/{bus}/{topic}",
    tag = "buses",
    params(
        ("bus" = String, Path, description = "bus name"),
        ("topic" = String, Path, description = "topic, e.g. org.plantd.mymodule.metric.temp"),
    ),
    request_body(content = Object, description = "any JSON value; published as MessagePack"),
    responses(
        (status = 202, description = "published: {success, data: {bus, topic, bytes}}"),
        (status = 401, description = "no or bad token"),
        (status = 403, description = "the token lacks bus:publish"),
        (status = 404, description = "no such bus"),
        (status = 503, description = "the bus is not connected"),
    )
)]
pub async fn publish(
    State(app): State<Arc<AppState>>,
    Path((bus_name, topic)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let bus = app.buses.get(&bus_name)?;
    if let Some(verifier) = app.verifier.clone() {
        let token = limits::bearer(&headers).map(str::to_owned);
        // A first verification may ask identity for its keys over MDP: off the async threads.
        let verdict = tokio::task::spawn_blocking(move || {
            verifier
                .authorize(token.as_deref(), PUBLISH_PERMISSION)
                .map(|_| ())
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
        if let Err(e) = verdict {
            return Err(ApiError::new(
                status_for_code(e.code()),
                e.code(),
                e.to_string(),
            ));
        }
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let payload = encode_msgpack(&value).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Some(publisher) = &bus.publisher else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "BUS_NOT_FOUND",
            format!("bus {bus_name:?} has no frontend to publish to"),
        ));
    };
    {
        let mut publisher = publisher.lock().unwrap_or_else(|e| e.into_inner());
        let (publisher, monitor) = &mut *publisher;
        // PUB drops messages while unconnected: tell the client rather than lose it silently.
        if !monitor.is_connected() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "BUS_UNAVAILABLE",
                format!("bus {bus_name:?} is not connected"),
            ));
        }
        publisher.publish(&topic, &payload).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "BUS_UNAVAILABLE",
                e.to_string(),
            )
        })?;
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"success": true, "data": {"bus": bus_name, "topic": topic, "bytes": payload.len()}})),
    )
        .into_response())
}
