//! The web dashboard in a real browser: `plantd up` (the real binary, on free ports) and a
//! headless Chromium driven through chromedriver (`tests/common/browser.rs`).
//!
//! 1. Logging in as the bootstrap admin; a wrong password shows an error and sets no cookie.
//! 2. The overview lists the services with their worker counts; a worker started by the test
//!    appears without a reload, and disappears when stopped.
//! 3. The throughput chart shows non-zero points under echo traffic.
//! 4. The metrics page plots a topic the test publishes readings on.
//! 5. The state page sets a key (read back with the SDK); a user without write permission sees
//!    the denial and the value stays.
//! 6. A request without the CSRF token is refused; the cookie is `HttpOnly` and
//!    `SameSite=Strict`; no page logs a console error, at 1280x800 or at phone width.
//! 7. Screenshots of the overview, metrics and state pages (into `PLANTD_DASHBOARD_SCREENSHOTS`
//!    when set: that is how `docs/dashboard/*.png` are made).
//! 8. Every page is reached with the keyboard alone (Tab, Shift-Tab, Enter), and whatever has
//!    the focus shows it.
//! 9. Five dashboard tabs in one browser (more than HTTP/1.1's six connections per host would
//!    allow at two streams a page) all stay live.
//!
//! Test 2 also checks the per-service request count on the overview grows with the test's
//! echo traffic.
//!
//! Without Chromium the tests are skipped with a message, unless `PLANTD_REQUIRE_BROWSER` is set.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::browser::Browser;
use common::Plantd;
use fantoccini::key::Key;
use serde_json::{json, Value};

/// Services of a test worker.
const TEST_SERVICE: &str = "org.plantd.test.Dashboard";
/// Where the test's readings go.
const TOPIC_PREFIX: &str = "org.plantd.metric.dashtest.";

/// `plantd up` (without the host-metrics module, to keep the machine quiet) and a browser.
struct Dash {
    browser: Browser,
    plantd: Plantd,
    _dir: tempfile::TempDir,
}

impl Dash {
    fn start(test: &str) -> Option<Dash> {
        let browser = Browser::start(test)?;
        let dir = tempfile::tempdir().unwrap();
        let plantd = Plantd::start(dir.path(), &["--except", "metric"], &[]);
        Some(Dash {
            browser,
            plantd,
            _dir: dir,
        })
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.plantd.port(8080))
    }

    fn admin_password(&self) -> String {
        std::fs::read_to_string(self.plantd.dir.join("plantd-data/admin-password"))
            .unwrap()
            .trim_end()
            .to_owned()
    }

    /// Opens the dashboard and logs in; returns once the overview shows a snapshot.
    fn log_in(&self, identifier: &str, password: &str) {
        let b = &self.browser;
        b.goto(&format!("{}/", self.base()));
        b.wait(
            "the login form",
            "!document.getElementById('page-login').hidden",
        );
        b.fill("#login-identifier", identifier);
        b.fill("#login-password", password);
        b.click("#login-submit");
        b.wait("the overview", "document.body.dataset.page === 'overview'");
        b.wait(
            "a snapshot",
            "document.getElementById('main').dataset.ready === 'true'",
        );
    }

    /// Waits for `page`, reached by the keyboard.
    fn open_by_keyboard(&self, page: &str) {
        self.browser.wait(
            &format!("the {page} page"),
            &format!("document.body.dataset.page === '{page}' && location.hash === '#{page}'"),
        );
    }

    fn open(&self, page: &str) {
        self.browser
            .js(&format!("location.hash = '#{page}'; return true;"));
        self.browser.wait(
            &format!("the {page} page"),
            &format!("document.body.dataset.page === '{page}'"),
        );
    }

    /// An access token of `identifier`, through the proxy's API.
    fn token(&self, identifier: &str, password: &str) -> String {
        let reply: Value = reqwest::blocking::Client::new()
            .post(format!(
                "{}/api/v1/services/org.plantd.Identity/auth/login",
                self.base()
            ))
            .json(&json!({"identifier": identifier, "password": password}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        reply["data"]["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("login of {identifier}: {reply}"))
            .to_owned()
    }

    /// An identity call through the proxy with `token`; the reply's `data`.
    fn identity(&self, token: &str, category: &str, op: &str, body: Value) -> Value {
        let reply: Value = reqwest::blocking::Client::new()
            .post(format!(
                "{}/api/v1/services/org.plantd.Identity/{category}/{op}",
                self.base()
            ))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(reply["success"], true, "{category}/{op}: {reply}");
        reply["data"].clone()
    }

    /// A broker client.
    fn client(&self) -> plantd_worker_sdk::Client {
        plantd_worker_sdk::Client::connect(&self.plantd.endpoint)
            .unwrap()
            .with_timeout(Duration::from_secs(10))
    }
}

/// Runs `work` in a loop on a thread until the returned guard is dropped.
struct Background(Arc<AtomicBool>, Option<JoinHandle<()>>);

impl Background {
    fn run(mut work: impl FnMut() + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                work();
            }
        });
        Background(stop, Some(thread))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(thread) = self.1.take() {
            let _ = thread.join();
        }
    }
}

/// Echo requests, back to back, until dropped.
fn echo_traffic(dash: &Dash) -> Background {
    let client = dash.client();
    Background::run(move || {
        let _ = client.request(
            "org.plantd.module.Echo",
            vec![b"echo".to_vec(), b"{}".to_vec()],
        );
    })
}

/// Readings on `<TOPIC_PREFIX>temperature`, ten a second, until dropped.
fn readings(dash: &Dash) -> Background {
    let frontend = format!("tcp://127.0.0.1:{}", dash.plantd.port(13000));
    let publisher = plantd_worker_sdk::bus::Publisher::connect(&frontend).unwrap();
    let mut i = 0u32;
    Background::run(move || {
        i += 1;
        let value = 20.0 + f64::from(i % 20) / 2.0;
        let metric =
            plantd_worker_sdk::bus::Metric::new("dashtest", "temperature", value).with_units("C");
        publisher.publish_metric(&metric).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    })
}

/// The worker count the overview shows for `service` (`None` while it has no row).
fn workers_shown(browser: &Browser, service: &str) -> Value {
    browser.js(&format!(
        "const row = document.querySelector('#services-body tr[data-service=\"{service}\"]'); \
         return row ? Number(row.querySelector('.workers').dataset.workers) : null;"
    ))
}

#[test]
fn login_as_the_bootstrap_admin_and_a_wrong_password_shows_an_error_and_no_cookie() {
    let Some(dash) = Dash::start("login") else {
        return;
    };
    let b = &dash.browser;
    b.goto(&format!("{}/", dash.base()));
    b.wait(
        "the login form",
        "!document.getElementById('page-login').hidden",
    );
    b.fill("#login-identifier", "admin");
    b.fill("#login-password", "certainly not the password");
    b.click("#login-submit");
    let error = b.wait(
        "the login error",
        "!document.getElementById('login-error').hidden && document.getElementById('login-error').textContent",
    );
    assert!(error.as_str().unwrap().contains("LOGIN_FAILED"), "{error}");
    assert!(
        b.cookies()
            .iter()
            .all(|(name, ..)| name != "plantd_session"),
        "no session cookie after a refused login: {:?}",
        b.cookies()
    );
    assert_eq!(b.js("return document.body.dataset.page;"), "login");
    // The console check of the other tests sees what the browser logs: here, the refused login.
    let logged = b.console_errors();
    assert!(
        logged
            .iter()
            .any(|e| e["message"].as_str().unwrap_or("").contains("401")),
        "the 401 of the refused login is in the console log: {logged:#?}"
    );

    dash.log_in("admin", &dash.admin_password());
    assert_eq!(
        b.js("return document.getElementById('whoami').textContent;"),
        "admin"
    );
    assert!(b
        .cookies()
        .iter()
        .any(|(name, ..)| name == "plantd_session"));
    // A reload keeps the session (the cookie), and logging out ends it.
    b.goto(&format!("{}/?reloaded#overview", dash.base()));
    b.wait(
        "the overview after a reload",
        "document.body.dataset.started === 'true' && document.body.dataset.page === 'overview'",
    );
    b.click("#logout");
    b.wait("the login page", "document.body.dataset.page === 'login'");
    b.goto(&format!("{}/#state", dash.base()));
    b.wait(
        "the login page after logout",
        "document.body.dataset.started === 'true'",
    );
    assert_eq!(b.js("return document.body.dataset.page;"), "login");
}

/// Each heading of the table at `table` sits where its column's values in the row at `row` do
/// (numbers right, names left).
fn assert_headings_aligned(b: &Browser, table: &str, row: &str) {
    let misaligned = b.js(&format!(
        "const row = document.querySelector('{row}'); \
         const heads = [...document.querySelectorAll('{table} thead th')]; \
         return heads.filter((th, i) => getComputedStyle(th).textAlign \
             !== getComputedStyle(row.cells[i]).textAlign).map(th => th.textContent);"
    ));
    assert_eq!(
        misaligned,
        json!([]),
        "{table}: headings aligned unlike their column"
    );
}

#[test]
fn the_overview_lists_services_and_a_new_worker_appears_and_disappears_live() {
    let Some(dash) = Dash::start("overview") else {
        return;
    };
    let b = &dash.browser;
    dash.log_in("admin", &dash.admin_password());
    for service in [
        "org.plantd.module.Echo",
        "org.plantd.State",
        "org.plantd.Logger",
        "org.plantd.Identity",
    ] {
        b.wait(
            &format!("{service} with its workers"),
            &format!(
                "Number(document.querySelector('#services-body tr[data-service=\"{service}\"] .workers').dataset.workers) >= 1"
            ),
        );
    }
    // Every process is UP in the health table.
    for process in ["broker", "echo", "state", "identity", "logger", "proxy"] {
        b.wait(
            &format!("{process} healthy"),
            &format!(
                "document.querySelector('#health-body tr[data-process=\"{process}\"] td').textContent === 'UP'"
            ),
        );
    }
    assert_eq!(workers_shown(b, TEST_SERVICE), Value::Null);
    // The per-service request count grows with the test's echo traffic (the broker's count
    // for the service, pushed with the next snapshot).
    let echo = "org.plantd.module.Echo";
    let shown = |what: &str| {
        b.js(&format!(
            "const row = document.querySelector('#services-body tr[data-service=\"{echo}\"]'); \
             return row ? Number(row.querySelector('.{what}').dataset.{what}) : null;"
        ))
        .as_u64()
        .expect("echo's row has the count")
    };
    let before = shown("requests");
    let client = dash.client();
    for _ in 0..20 {
        client
            .request(echo, vec![b"echo".to_vec(), b"{}".to_vec()])
            .unwrap();
    }
    b.wait(
        "echo's request count to grow by the test's 20",
        &format!(
            "Number(document.querySelector('#services-body tr[data-service=\"{echo}\"] .requests').dataset.requests) >= {}",
            before + 20
        ),
    );
    assert_eq!(shown("errors"), 0, "echo answered every request");
    assert_headings_aligned(
        b,
        "#services-table",
        &format!("#services-body tr[data-service=\"{echo}\"]"),
    );
    // A marker that a reload would lose.
    b.js("window.__notReloaded = true; return true;");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let worker = plantd_worker_sdk::Worker::builder(TEST_SERVICE)
        .endpoint(dash.plantd.endpoint.clone())
        .heartbeat(Duration::from_millis(250))
        .handler(|frames: plantd_worker_sdk::Frames| Ok(frames))
        .build()
        .unwrap();
    let stop = plantd_worker_sdk::Shutdown::new();
    let task = runtime.spawn(worker.run(stop.clone()));
    b.wait(
        "the new worker on the overview",
        &format!(
            "Number(document.querySelector('#services-body tr[data-service=\"{TEST_SERVICE}\"] .workers').dataset.workers) === 1"
        ),
    );
    dash.open("workers");
    let dialect = b.wait(
        "the worker on the workers page",
        &format!(
            "document.querySelector('#workers-list [data-service=\"{TEST_SERVICE}\"] tr[data-worker] td:nth-child(2)').textContent"
        ),
    );
    assert_eq!(dialect, "0.2");
    let workers = format!("#workers-list [data-service=\"{TEST_SERVICE}\"]");
    assert_headings_aligned(b, &workers, &format!("{workers} tr[data-worker]"));

    dash.open("overview");
    stop.cancel();
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), task).await })
        .expect("the worker stops")
        .unwrap()
        .unwrap();
    b.wait(
        "the stopped worker to disappear",
        &format!("!document.querySelector('#services-body tr[data-service=\"{TEST_SERVICE}\"]')"),
    );
    assert_eq!(
        b.js("return window.__notReloaded === true;"),
        true,
        "no reload happened"
    );
}

#[test]
fn the_throughput_chart_shows_nonzero_points_under_echo_traffic() {
    let Some(dash) = Dash::start("throughput") else {
        return;
    };
    let b = &dash.browser;
    dash.log_in("admin", &dash.admin_password());
    let traffic = echo_traffic(&dash);
    // On a loaded machine the first points after the traffic starts may be slow ones: wait for
    // a peak above 1 request/s, not just any non-zero point.
    let nonzero = b.wait(
        "non-zero throughput points and a peak above 1 request/s",
        "Number(document.getElementById('throughput-chart').dataset.nonzero) >= 2 && Number(document.getElementById('throughput-chart').dataset.max) > 1 && Number(document.getElementById('throughput-chart').dataset.nonzero)",
    );
    drop(traffic);
    assert!(nonzero.as_u64().unwrap() >= 2);
    let max: f64 = b
        .js("return document.getElementById('throughput-chart').dataset.max;")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(max > 1.0, "requests/s at the peak: {max}");
    assert_eq!(
        b.js("return document.querySelectorAll('#throughput-chart polyline').length;"),
        1
    );
}

#[test]
fn the_metrics_page_plots_a_topic_the_test_published_readings_on() {
    let Some(dash) = Dash::start("metrics") else {
        return;
    };
    let b = &dash.browser;
    dash.log_in("admin", &dash.admin_password());
    let readings = readings(&dash);
    dash.open("metrics");
    b.fill("#metrics-prefix", TOPIC_PREFIX);
    b.select("#metrics-window", "300");
    // The logger stores readings as they come; plot again until it has some.
    let mut points = None;
    let end = std::time::Instant::now() + common::browser::PAGE_DEADLINE;
    while points.is_none() {
        assert!(
            std::time::Instant::now() < end,
            "no points plotted for {TOPIC_PREFIX}"
        );
        b.click("#metrics-load");
        points = b.try_wait(
            "Number(document.getElementById('metrics-chart').dataset.points)",
            Duration::from_secs(2),
        );
    }
    let topic = format!("{TOPIC_PREFIX}temperature");
    assert!(points.unwrap().as_u64().unwrap() >= 1);
    assert_eq!(
        b.js("return document.querySelector('#metrics-chart circle.point').dataset.topic;"),
        topic.as_str()
    );
    assert_eq!(
        b.js("return document.querySelector('#metrics-legend li').dataset.topic;"),
        topic.as_str()
    );
    // The live tail beside it shows the readings as they are published.
    b.wait(
        "a live reading",
        &format!("document.querySelector('#metrics-tail li[data-topic=\"{topic}\"]')"),
    );
    drop(readings);
}

#[test]
fn the_state_page_sets_a_key_and_a_user_without_write_permission_is_denied() {
    let Some(dash) = Dash::start("state") else {
        return;
    };
    let b = &dash.browser;
    let admin = dash.token("admin", &dash.admin_password());
    let viewer_password = "viewer passphrase 1";
    let user = dash.identity(
        &admin,
        "user",
        "create",
        json!({"username": "viewer", "email": "viewer@example.com", "password": viewer_password}),
    )["user"]["id"]
        .clone();
    let role = dash.identity(
        &admin,
        "role",
        "create",
        json!({"name": "state-viewer", "permissions": ["state:scope:list", "state:data:read"]}),
    )["role"]["id"]
        .clone();
    dash.identity(
        &admin,
        "user",
        "assign_role",
        json!({"user_id": user, "role_id": role}),
    );

    let read_back = || {
        let reply = dash
            .client()
            .request(
                "org.plantd.State",
                vec![
                    b"state-get".to_vec(),
                    json!({"service": "dash.test", "key": "limit", "token": admin})
                        .to_string()
                        .into_bytes(),
                ],
            )
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply[0]).unwrap();
        reply["data"]["value"].clone()
    };

    dash.log_in("admin", &dash.admin_password());
    dash.open("state");
    b.fill("#state-scope", "dash.test");
    b.fill("#state-key", "limit");
    b.fill("#state-value", r#"{"max": 5, "unit": "bar"}"#);
    b.click("#state-set");
    b.wait(
        "the set to succeed",
        "document.getElementById('state-message').dataset.code === 'SET'",
    );
    assert_eq!(read_back(), json!({"max": 5, "unit": "bar"}));
    // The page lists the scope and its key and shows the value as formatted JSON.
    b.wait(
        "the scope listed",
        "document.querySelector('#scope-list button[data-scope=\"dash.test\"]')",
    );
    b.wait(
        "the key listed",
        "document.querySelector('#key-list button[data-key=\"limit\"]')",
    );
    let shown = b.js("return document.getElementById('state-value-view').textContent;");
    assert_eq!(shown, "{\n  \"max\": 5,\n  \"unit\": \"bar\"\n}");

    b.click("#logout");
    b.wait("the login page", "document.body.dataset.page === 'login'");
    dash.log_in("viewer", viewer_password);
    dash.open("state");
    b.wait(
        "the viewer sees the scope",
        "document.querySelector('#scope-list button[data-scope=\"dash.test\"]')",
    );
    let hint = b.wait(
        "the read-only hint",
        "document.getElementById('state-access').textContent",
    );
    assert!(
        hint.as_str().unwrap().contains("do not include writing"),
        "{hint}"
    );
    b.click("#scope-list button[data-scope=\"dash.test\"]");
    b.wait(
        "the viewer sees the key",
        "document.querySelector('#key-list button[data-key=\"limit\"]')",
    );
    b.click("#key-list button[data-key=\"limit\"]");
    b.wait(
        "the viewer reads the value",
        "document.getElementById('state-value').value.includes('\"max\": 5')",
    );
    b.fill("#state-value", r#"{"max": 99}"#);
    b.click("#state-set");
    let denial = b.wait(
        "the denial",
        "document.getElementById('state-message').dataset.code === 'PERMISSION_DENIED' && document.getElementById('state-message').textContent",
    );
    assert!(
        denial.as_str().unwrap().contains("state:"),
        "the permission is named: {denial}"
    );
    assert_eq!(read_back(), json!({"max": 5, "unit": "bar"}), "unchanged");
}

#[test]
fn csrf_is_required_the_cookie_is_strict_and_no_page_logs_a_console_error() {
    let Some(dash) = Dash::start("security") else {
        return;
    };
    let b = &dash.browser;
    dash.log_in("admin", &dash.admin_password());
    let _traffic = readings(&dash);

    let visit_every_page = || {
        b.wait(
            "throughput drawn",
            "document.querySelector('#throughput-chart line.axis')",
        );
        dash.open("workers");
        b.wait(
            "workers listed",
            "document.querySelector('#workers-list [data-worker]')",
        );
        dash.open("metrics");
        b.wait(
            "a metrics reply",
            "document.querySelector('#metrics-chart line.axis') || document.getElementById('metrics-message').textContent",
        );
        dash.open("state");
        b.wait(
            "scopes listed",
            "document.getElementById('scope-list').dataset.loaded === 'true'",
        );
        dash.open("events");
        b.wait(
            "the audit log",
            "document.getElementById('audit-message').textContent",
        );
        b.wait(
            "audit rows",
            "document.querySelector('#audit-body tr[data-action]')",
        );
        dash.open("overview");
    };
    visit_every_page();
    let errors = b.console_errors();
    assert!(errors.is_empty(), "console errors at 1280x800: {errors:#?}");

    // Phone width: nothing wider than the screen, and still no errors.
    b.resize(390, 844);
    visit_every_page();
    for page in ["overview", "metrics", "state", "events"] {
        dash.open(page);
        let overflow = b.js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        );
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{page} is {overflow}px too wide at 390px"
        );
    }
    let errors = b.console_errors();
    assert!(
        errors.is_empty(),
        "console errors at phone width: {errors:#?}"
    );

    // The cookie: HttpOnly (the page cannot read it) and SameSite=Strict.
    let cookies = b.cookies();
    let session = cookies
        .iter()
        .find(|(name, ..)| name == "plantd_session")
        .expect("the session cookie");
    assert_eq!(session.1, Some(true), "HttpOnly: {cookies:?}");
    assert_eq!(
        session.2.as_deref(),
        Some("Strict"),
        "SameSite: {cookies:?}"
    );
    let visible = b.js("return document.cookie;");
    assert!(
        !visible.as_str().unwrap().contains("plantd_session"),
        "{visible}"
    );

    // A request from the page without the CSRF token, or with a wrong one, is refused.
    let attempt = |header: &str| {
        b.js(&format!(
            "window.__csrf = null; \
             fetch('/dashboard/api/state/create-scope', {{method: 'POST', credentials: 'same-origin', \
               headers: Object.assign({{'Content-Type': 'application/json'}}, {header}), \
               body: JSON.stringify({{service: 'dash.csrf'}})}}) \
               .then(async r => {{ window.__csrf = [r.status, (await r.json()).error.code]; }}); \
             return true;"
        ));
        b.wait("the refusal", "window.__csrf")
    };
    assert_eq!(attempt("{}"), json!([403, "CSRF_MISSING"]));
    assert_eq!(
        attempt("{'X-CSRF-Token': 'forged'}"),
        json!([403, "CSRF_INVALID"])
    );
    let scopes = dash
        .client()
        .request(
            "org.plantd.State",
            vec![
                b"list-scopes".to_vec(),
                json!({"token": dash.token("admin", &dash.admin_password())})
                    .to_string()
                    .into_bytes(),
            ],
        )
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&scopes[0]).contains("dash.csrf"),
        "the refused requests changed nothing"
    );
}

#[test]
fn screenshots_of_the_overview_metrics_and_state_pages() {
    let Some(dash) = Dash::start("screenshots") else {
        return;
    };
    let b = &dash.browser;
    let keep = std::env::var_os("PLANTD_DASHBOARD_SCREENSHOTS").map(PathBuf::from);
    let temp = tempfile::tempdir().unwrap();
    let dir = keep.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir).unwrap();

    dash.log_in("admin", &dash.admin_password());
    let _readings = readings(&dash);
    let traffic = echo_traffic(&dash);
    // Some history on the chart: a few seconds of traffic.
    b.wait(
        "a few throughput points",
        "Number(document.getElementById('throughput-chart').dataset.nonzero) >= 5",
    );
    b.wait(
        "every process healthy",
        "document.querySelectorAll('#health-body td.status-UP').length >= 6",
    );
    b.screenshot(&dir.join("overview.png"));
    drop(traffic);

    dash.open("metrics");
    b.fill("#metrics-prefix", TOPIC_PREFIX);
    b.select("#metrics-window", "300");
    let end = std::time::Instant::now() + common::browser::PAGE_DEADLINE;
    loop {
        assert!(std::time::Instant::now() < end, "no points plotted");
        b.click("#metrics-load");
        if b.try_wait(
            "Number(document.getElementById('metrics-chart').dataset.points) >= 4",
            Duration::from_secs(2),
        )
        .is_some()
        {
            break;
        }
    }
    b.wait(
        "a few live readings",
        "document.querySelectorAll('#metrics-tail li').length >= 5",
    );
    b.screenshot(&dir.join("metrics.png"));

    dash.open("state");
    b.fill("#state-scope", "org.plantd.Lab");
    b.fill("#state-key", "oven-1");
    b.fill(
        "#state-value",
        r#"{"setpoint": 182.5, "mode": "auto", "alarms": ["door"]}"#,
    );
    b.click("#state-set");
    b.wait(
        "the key set",
        "document.getElementById('state-message').dataset.code === 'SET'",
    );
    b.screenshot(&dir.join("state.png"));

    for page in ["overview", "metrics", "state"] {
        let png = std::fs::read(dir.join(format!("{page}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{page}.png is a PNG");
        assert!(
            png.len() > 10_000,
            "{page}.png has content ({} bytes)",
            png.len()
        );
    }
    if let Some(dir) = keep {
        eprintln!("screenshots saved in {}", dir.display());
    }
}

/// The focused element and whether it shows a focus outline: `None` when nothing (the body) has
/// the focus.
fn focused(browser: &Browser) -> Option<(String, bool)> {
    let value = browser.js(
        "const e = document.activeElement; \
         if (!e || e === document.body || e === document.documentElement) return null; \
         const s = getComputedStyle(e); \
         const shown = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2; \
         return [e.id || (e.tagName + ' ' + (e.dataset.scope || e.textContent || '').trim().slice(0, 30)), shown];",
    );
    let pair = value.as_array()?;
    Some((pair[0].as_str()?.to_owned(), pair[1].as_bool()?))
}

/// Presses Tab (Shift-Tab when `back`) until the element `id` has the focus, checking on the
/// way that every focused element shows it.
fn tab_to(browser: &Browser, id: &str, back: bool) {
    let mut path = Vec::new();
    for _ in 0..80 {
        browser.press(Key::Tab, back);
        if let Some((focus, shown)) = focused(browser) {
            assert!(
                shown,
                "{focus} has the focus but shows no outline (path: {path:?})"
            );
            if focus == id {
                return;
            }
            path.push(focus);
        }
    }
    panic!(
        "{id} not reached with {}: {path:?}",
        if back { "Shift-Tab" } else { "Tab" }
    );
}

#[test]
fn every_page_is_reached_with_the_keyboard_alone_and_the_focus_shows() {
    let Some(dash) = Dash::start("keyboard") else {
        return;
    };
    let b = &dash.browser;
    b.goto(&format!("{}/", dash.base()));
    // The login form has the focus; the user types, tabs and presses Enter.
    b.wait(
        "the focus in the login form",
        "document.activeElement && document.activeElement.id === 'login-identifier'",
    );
    b.type_text("admin");
    tab_to(b, "login-password", false);
    b.type_text(&dash.admin_password());
    b.press(Key::Enter, false);
    b.wait("the overview", "document.body.dataset.page === 'overview'");
    b.wait(
        "a snapshot",
        "document.getElementById('main').dataset.ready === 'true'",
    );
    assert_eq!(
        focused(b).map(|f| f.0).as_deref(),
        Some("nav-overview"),
        "after login the focus is on the current page's link"
    );

    // Forward through the pages, using each page's controls on the way.
    tab_to(b, "nav-workers", false);
    b.press(Key::Enter, false);
    dash.open_by_keyboard("workers");
    b.wait(
        "workers listed",
        "document.querySelector('#workers-list [data-worker]')",
    );

    tab_to(b, "nav-metrics", false);
    b.press(Key::Enter, false);
    dash.open_by_keyboard("metrics");
    tab_to(b, "metrics-load", false);
    b.press(Key::Enter, false);
    b.wait(
        "a metrics reply",
        "document.querySelector('#metrics-chart line.axis') || document.getElementById('metrics-message').textContent",
    );

    tab_to(b, "nav-state", true);
    b.press(Key::Enter, false);
    dash.open_by_keyboard("state");
    b.wait(
        "scopes listed",
        "document.getElementById('scope-list').dataset.loaded === 'true'",
    );
    tab_to(b, "scope-new", false);
    b.type_text("keyboard.scope");
    b.press(Key::Enter, false);
    b.wait(
        "the scope created",
        "document.getElementById('state-message').dataset.code === 'CREATED'",
    );
    b.wait(
        "the new scope listed",
        "document.querySelector('#scope-list button[data-scope=\"keyboard.scope\"]')",
    );
    // Its button is a button: Tab to it, Enter selects it.
    tab_to(b, "BUTTON keyboard.scope", false);
    b.press(Key::Enter, false);
    b.wait(
        "its keys",
        "document.getElementById('keys-title').textContent === 'Keys in keyboard.scope'",
    );

    tab_to(b, "nav-events", true);
    b.press(Key::Enter, false);
    dash.open_by_keyboard("events");
    tab_to(b, "audit-load", false);
    b.press(Key::Enter, false);
    b.wait(
        "audit rows",
        "document.querySelector('#audit-body tr[data-action]')",
    );

    // Back to the overview with Shift-Tab, then the skip link: focus to the content, same page.
    tab_to(b, "nav-overview", true);
    b.press(Key::Enter, false);
    dash.open_by_keyboard("overview");
    tab_to(b, "skip", true);
    b.press(Key::Enter, false);
    b.wait(
        "the content focused",
        "document.activeElement === document.getElementById('main')",
    );
    assert_eq!(b.js("return location.hash;"), "#overview");
    assert_eq!(b.js("return document.body.dataset.page;"), "overview");

    // And out (the log-out button is just before the content).
    tab_to(b, "logout", true);
    b.press(Key::Enter, false);
    b.wait("the login page", "document.body.dataset.page === 'login'");
    b.wait(
        "the focus back in the login form",
        "document.activeElement && document.activeElement.id === 'login-identifier'",
    );
    let errors = b.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// The proxy's open SSE responses of `kind` (`dashboard`, `bus`), from its `/metrics`.
fn sse_streams(dash: &Dash, kind: &str) -> f64 {
    let text = reqwest::blocking::get(format!(
        "http://127.0.0.1:{}/metrics",
        dash.plantd.port(8085)
    ))
    .and_then(|r| r.text())
    .unwrap();
    let series = format!("plantd_proxy_sse_streams{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[test]
fn five_dashboard_tabs_in_one_browser_all_stay_live() {
    let Some(dash) = Dash::start("tabs") else {
        return;
    };
    let b = &dash.browser;
    dash.log_in("admin", &dash.admin_password());
    let _readings = readings(&dash);
    let topic = format!("{TOPIC_PREFIX}temperature");
    // Every tab on the metrics page: snapshots and the metric bus tail, the most a page follows.
    let mut tabs = vec![b.current_tab()];
    dash.open("metrics");
    for _ in 1..5 {
        tabs.push(b.new_tab());
        b.goto(&format!("{}/#metrics", dash.base()));
        b.wait(
            "the metrics page",
            "document.body.dataset.page === 'metrics'",
        );
        b.wait(
            "a snapshot",
            "document.getElementById('main').dataset.ready === 'true'",
        );
    }
    // One stream a page: five in all, and no separate bus tails.
    plantd_worker_sdk::testing::wait_until("five dashboard streams", || {
        sse_streams(&dash, "dashboard") == 5.0
    });
    assert_eq!(sse_streams(&dash, "bus"), 0.0);
    // The last tab gets live readings, new snapshots, and its calls through.
    b.wait(
        "a live reading in the fifth tab",
        &format!("document.querySelector('#metrics-tail li[data-topic=\"{topic}\"]')"),
    );
    b.js("window.__status = document.getElementById('live-status').textContent; return true;");
    b.wait(
        "a new snapshot in the fifth tab",
        "document.getElementById('live-status').textContent !== window.__status",
    );
    b.fill("#metrics-prefix", TOPIC_PREFIX);
    b.click("#metrics-load");
    b.wait(
        "the metrics call answered in the fifth tab",
        "document.querySelector('#metrics-chart line.axis') || document.getElementById('metrics-message').textContent",
    );
    // And the first tab is still live.
    b.switch_to(&tabs[0]);
    b.js("window.__count = document.querySelectorAll('#metrics-tail li').length; return true;");
    b.wait(
        "more readings in the first tab",
        "document.querySelectorAll('#metrics-tail li').length > window.__count || document.querySelectorAll('#metrics-tail li').length >= 100",
    );
    let errors = b.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
