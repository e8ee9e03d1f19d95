//! Test harness: a real broker (with an `event` bus) and a real identity service on free
//! loopback ports, in one tokio runtime, with a blocking SDK client for the test thread.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use plantd_broker::BrokerConfig;
use plantd_identity::{IdentityConfig, IdentityError};
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::testing::{free_endpoint, free_port};
use plantd_worker_sdk::Shutdown;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

pub use plantd_worker_sdk::testing::wait_until as wait_for;

/// The service name.
pub const SERVICE: &str = "org.plantd.Identity";

pub struct Harness {
    pub rt: Runtime,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    /// Frontend and backend of the broker's `event` bus.
    pub bus_frontend: String,
    pub bus_backend: String,
    broker_stop: Shutdown,
    broker: Option<JoinHandle<()>>,
    identity_stop: Shutdown,
    identity: Option<JoinHandle<Result<(), IdentityError>>>,
    pub config: IdentityConfig,
}

impl Harness {
    /// A broker (with an `event` bus) and nothing else yet; `config` is ready for identity.
    pub fn broker_only() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let endpoint = free_endpoint();
        let (front, back) = (free_port(), free_port());
        let broker = BrokerConfig {
            endpoint: endpoint.clone(),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            heartbeat_interval_ms: 250,
            bus: plantd_broker::bus::BusSettings {
                buses: vec![plantd_broker::bus::BusConfig {
                    name: "event".into(),
                    frontend: format!("tcp://127.0.0.1:{front}"),
                    backend: format!("tcp://127.0.0.1:{back}"),
                    capture: None,
                }],
                ..plantd_broker::bus::BusSettings::default()
            },
            ..BrokerConfig::default()
        };
        let broker_stop = Shutdown::new();
        let stop = broker_stop.clone();
        let broker = rt.spawn(async move {
            plantd_broker::run(broker, stop).await.expect("broker runs");
        });
        let config = IdentityConfig {
            db: dir.path().join("identity.db"),
            broker_endpoint: endpoint.clone(),
            heartbeat_ms: 250,
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            event_endpoint: format!("tcp://127.0.0.1:{front}"),
            // Generous by default so tests that are not about limits never meet them.
            rate_limit: plantd_identity::config::RateLimitConfig {
                per_minute: 100_000,
                burst: 10_000,
            },
            ..IdentityConfig::default()
        };
        Harness {
            rt,
            dir,
            endpoint,
            bus_frontend: format!("tcp://127.0.0.1:{front}"),
            bus_backend: format!("tcp://127.0.0.1:{back}"),
            broker_stop,
            broker: Some(broker),
            identity_stop: Shutdown::new(),
            identity: None,
            config,
        }
    }

    /// A broker and an identity service with the default test configuration, ready to serve.
    pub fn start() -> Self {
        let mut h = Self::broker_only();
        h.start_identity();
        h
    }

    /// Starts identity with `self.config` and waits until it serves.
    pub fn start_identity(&mut self) {
        assert!(self.identity.is_none(), "identity already running");
        self.identity_stop = Shutdown::new();
        let (config, stop) = (self.config.clone(), self.identity_stop.clone());
        self.identity = Some(self.rt.spawn(plantd_identity::run(config, stop)));
        self.wait_until_serving();
    }

    /// Stops identity and waits for it to finish.
    pub fn stop_identity(&mut self) {
        self.identity_stop.cancel();
        if let Some(task) = self.identity.take() {
            self.rt
                .block_on(task)
                .expect("identity task")
                .expect("identity stops cleanly");
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.endpoint)
            .unwrap()
            .with_timeout(Duration::from_secs(20))
    }

    /// Sends `[category, operation, body]` and returns the reply envelope.
    pub fn call(&self, category: &str, operation: &str, body: Value) -> Value {
        call(&self.client(), category, operation, &body)
    }

    /// Like [`call`](Self::call), with `token` added to the body.
    pub fn call_as(&self, token: &str, category: &str, operation: &str, body: Value) -> Value {
        let mut body = body;
        body["token"] = Value::String(token.to_owned());
        self.call(category, operation, body)
    }

    pub fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.health_port)
    }

    /// The text of `/metrics`.
    pub fn metrics(&self) -> String {
        reqwest::blocking::get(format!("{}/metrics", self.health_url()))
            .and_then(|response| response.text())
            .expect("GET /metrics")
    }

    pub fn db_path(&self) -> PathBuf {
        self.config.db.clone()
    }

    /// The bootstrap admin's password.
    pub fn admin_password(&self) -> String {
        let path = plantd_identity::admin_password_path(&self.config);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim_end()
            .to_owned()
    }

    /// Logs in and returns the `data` of the reply.
    pub fn login(&self, identifier: &str, password: &str) -> Value {
        data(self.call(
            "auth",
            "login",
            json!({"identifier": identifier, "password": password}),
        ))
    }

    /// An access token of the bootstrap admin.
    pub fn admin_token(&self) -> String {
        let password = self.admin_password();
        self.login("admin", &password)["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a user (as `admin`) and returns their id.
    pub fn create_user(&self, admin: &str, username: &str, password: &str) -> i64 {
        let reply = self.call_as(
            admin,
            "user",
            "create",
            json!({"username": username, "email": format!("{username}@example.com"), "password": password}),
        );
        data(reply)["user"]["id"].as_i64().unwrap()
    }

    /// Creates a global role with `permissions` (as `admin`) and returns its id.
    pub fn create_role(&self, admin: &str, name: &str, permissions: &[&str]) -> i64 {
        let reply = self.call_as(
            admin,
            "role",
            "create",
            json!({"name": name, "permissions": permissions}),
        );
        data(reply)["role"]["id"].as_i64().unwrap()
    }

    /// Creates a user holding a fresh global role with `permissions`, logs them in and returns
    /// (user id, access token).
    pub fn user_with(&self, admin: &str, username: &str, permissions: &[&str]) -> (i64, String) {
        let user = self.create_user(admin, username, "a long enough passphrase");
        if !permissions.is_empty() {
            let role = self.create_role(admin, &format!("{username}-role"), permissions);
            data(self.call_as(
                admin,
                "user",
                "assign_role",
                json!({"user_id": user, "role_id": role}),
            ));
        }
        let token = self.login(username, "a long enough passphrase")["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        (user, token)
    }

    /// Polls until identity answers through the broker.
    pub fn wait_until_serving(&self) {
        let client = Client::connect(&self.endpoint)
            .unwrap()
            .with_timeout(Duration::from_millis(500));
        wait_for("the identity service to serve", || {
            client
                .request(
                    SERVICE,
                    vec![b"health".to_vec(), b"check".to_vec(), b"{}".to_vec()],
                )
                .is_ok()
        });
    }

    /// A subscriber to identity's events on the `event` bus, connected and subscribed: it
    /// receives a probe event published after this returns.
    pub fn subscribe_events(&self) -> plantd_worker_sdk::bus::Subscriber {
        let subscriber = plantd_worker_sdk::bus::Subscriber::connect(&self.bus_backend).unwrap();
        subscriber.subscribe("org.plantd.identity.").unwrap();
        // PUB/SUB drops what is published before the subscription reaches the broker: publish
        // a probe until it arrives.
        let publisher = plantd_worker_sdk::bus::Publisher::connect(&self.bus_frontend).unwrap();
        wait_for("the event subscription to take effect", || {
            publisher
                .publish("org.plantd.identity.probe", b"probe")
                .unwrap();
            matches!(
                subscriber.recv_timeout(Duration::from_millis(50)),
                Ok(Some(m)) if m.topic == "org.plantd.identity.probe"
            )
        });
        while let Ok(Some(_)) = subscriber.recv_timeout(Duration::from_millis(20)) {}
        subscriber
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.identity_stop.cancel();
        self.broker_stop.cancel();
        if let Some(task) = self.identity.take() {
            let _ = self.rt.block_on(task);
        }
        if let Some(task) = self.broker.take() {
            let _ = self.rt.block_on(task);
        }
    }
}

/// Sends `[category, operation, body]` with `client` and parses the one-frame reply.
pub fn call(client: &Client, category: &str, operation: &str, body: &Value) -> Value {
    call_raw(client, category, operation, body.to_string().as_bytes())
}

/// Sends `[category, operation, raw body]` and parses the one-frame reply.
pub fn call_raw(client: &Client, category: &str, operation: &str, body: &[u8]) -> Value {
    let reply = client
        .request(
            SERVICE,
            vec![
                category.as_bytes().to_vec(),
                operation.as_bytes().to_vec(),
                body.to_vec(),
            ],
        )
        .unwrap_or_else(|e| panic!("{category}/{operation}: {e}"));
    assert_eq!(reply.len(), 1, "one reply frame");
    serde_json::from_slice(&reply[0]).expect("reply is JSON")
}

/// The `data` of a success reply; panics with the reply otherwise.
pub fn data(reply: Value) -> Value {
    assert_eq!(reply["success"], Value::Bool(true), "{reply}");
    reply["data"].clone()
}

/// The error code of a failure reply.
pub fn code(reply: &Value) -> String {
    assert_eq!(reply["success"], Value::Bool(false), "{reply}");
    reply["error"]["code"].as_str().unwrap().to_owned()
}

/// The error message of a failure reply.
pub fn message(reply: &Value) -> String {
    reply["error"]["message"].as_str().unwrap_or("").to_owned()
}

/// Receives identity events until one on `topic` satisfies `want`, and returns its data.
pub fn expect_event(
    subscriber: &plantd_worker_sdk::bus::Subscriber,
    topic: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + plantd_worker_sdk::testing::WAIT_DEADLINE;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(message)) = subscriber.recv_timeout(Duration::from_millis(100)) {
            if message.topic != topic {
                continue;
            }
            let event: plantd_worker_sdk::bus::Event = message.decode_body().expect("an Event");
            assert_eq!(event.source, SERVICE);
            if want(&event.data) {
                return event.data;
            }
        }
    }
    panic!("no {topic} event as wanted");
}

/// The decoded (header, claims) of a JWT, unverified.
pub fn parts(token: &str) -> (Value, Value) {
    let mut pieces = token.split('.');
    let mut next = || {
        let piece = pieces.next().expect("three parts");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(piece).expect("base64url")).expect("JSON")
    };
    (next(), next())
}

fn encode_part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Forgeries of a genuine token `weak` of `h`'s identity, each with the code every verifier must
/// refuse it with, and the genuine key re-signing `weak`'s claims (which must be accepted).
pub struct Forgeries {
    /// (what, token, expected code).
    pub tokens: Vec<(&'static str, String, &'static str)>,
    /// `weak`'s claims signed again with identity's real key: valid.
    pub resigned: String,
}

/// Wrong key, `alg: none`, HS256 keyed with the public key, tampered claims, and identity's real
/// key (read from its database) with an expiry in the past.
pub fn forgeries(h: &Harness, weak: &str) -> Forgeries {
    let (header, claims) = parts(weak);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let mut escalated = claims.clone();
    escalated["permissions"] = json!(["system:admin"]);
    let now = chrono::Utc::now().timestamp();

    // Another Ed25519 key, naming identity's kid.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&stranger).unwrap();
    let mut eddsa = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    eddsa.kid = Some(kid.clone());
    let wrong_key = jsonwebtoken::encode(
        &eddsa,
        &escalated,
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();
    // alg: none, no signature.
    let none = format!(
        "{}.{}.",
        encode_part(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        encode_part(&escalated)
    );
    // HS256 keyed with the public key (the classic algorithm-confusion attack).
    let keys = data(h.call("auth", "public_keys", json!({})));
    let public = URL_SAFE_NO_PAD
        .decode(keys["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs,
        &escalated,
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    // The genuine signature over changed claims.
    let pieces: Vec<&str> = weak.split('.').collect();
    let tampered = format!("{}.{}.{}", pieces[0], encode_part(&escalated), pieces[2]);
    // Genuinely signed by identity's own key (read from its database), but expired.
    let secret: Vec<u8> = rusqlite::Connection::open(h.db_path())
        .unwrap()
        .query_row(
            "SELECT secret_key FROM signing_keys WHERE kid = ?1",
            [&kid],
            |r| r.get(0),
        )
        .unwrap();
    let real = ed25519_dalek::SigningKey::from_bytes(&secret.try_into().unwrap());
    let real_der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&real).unwrap();
    let mut old = claims.clone();
    old["iat"] = json!(now - 3600);
    old["exp"] = json!(now - 120);
    let expired = jsonwebtoken::encode(
        &eddsa,
        &old,
        &jsonwebtoken::EncodingKey::from_ed_der(real_der.as_bytes()),
    )
    .unwrap();
    // The same key and claims with a live expiry: accepted, so a refusal of `expired` is the
    // expiry's.
    let mut live = claims.clone();
    live["jti"] = json!("00000000000000000000000000000000");
    let resigned = jsonwebtoken::encode(
        &eddsa,
        &live,
        &jsonwebtoken::EncodingKey::from_ed_der(real_der.as_bytes()),
    )
    .unwrap();

    Forgeries {
        tokens: vec![
            ("wrong key", wrong_key, "UNAUTHENTICATED"),
            ("alg none", none, "UNAUTHENTICATED"),
            ("HS256 with the public key", hs256, "UNAUTHENTICATED"),
            ("tampered claims", tampered, "UNAUTHENTICATED"),
            ("expired", expired, "TOKEN_EXPIRED"),
        ],
        resigned,
    }
}
