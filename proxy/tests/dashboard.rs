//! The dashboard's HTTP side against a real broker, identity, state, echo and the real proxy:
//! logins (a refused one sets no cookie), the cookie's attributes, CSRF, unknown sessions,
//! logout at identity, denials passed on, the one MMI poller shared by every open page, and a
//! page's bus tail on its one live stream.

mod common;

use common::{status_and_json, SseReader, System, WAIT_DEADLINE};
use plantd_proxy::HealthTarget;
use plantd_worker_sdk::testing::{free_port, wait_until};
use serde_json::{json, Value};

/// A system with identity, state (checking tokens) and echo, and the proxy.
fn system(tweak: impl FnOnce(&mut plantd_proxy::ProxyConfig)) -> System {
    let mut sys = System::new();
    sys.start_identity();
    sys.start_state(sys.auth());
    sys.start_echo();
    tweak(&mut sys.proxy);
    sys.start_proxy();
    sys
}

fn admin_password(sys: &System) -> String {
    let path = plantd_identity::admin_password_path(sys.identity.as_ref().unwrap());
    std::fs::read_to_string(path).unwrap().trim_end().to_owned()
}

/// A dashboard login: status, body and the `Set-Cookie` header, if any.
fn login(sys: &System, identifier: &str, password: &str) -> (u16, Value, Option<String>) {
    let response = sys
        .http
        .post(sys.url("/dashboard/api/login"))
        .header("content-type", "application/json")
        .body(json!({"identifier": identifier, "password": password}).to_string())
        .send()
        .unwrap();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = status_and_json(response);
    (status, body, cookie)
}

/// A logged-in browser: its `Cookie` header and CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

fn log_in(sys: &System, identifier: &str, password: &str) -> Browser {
    let (status, body, cookie) = login(sys, identifier, password);
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.expect("a session cookie");
    Browser {
        cookie: cookie.split(';').next().unwrap().to_owned(),
        csrf: body["data"]["csrf_token"].as_str().unwrap().to_owned(),
    }
}

/// A dashboard POST with the given cookie and CSRF header.
fn post(
    sys: &System,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut request = sys
        .http
        .post(sys.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    status_and_json(request.send().unwrap())
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn a_wrong_password_sets_no_cookie_and_a_login_sets_a_strict_http_only_one() {
    let mut sys = system(|_| {});
    let (status, body, cookie) = login(&sys, "admin", "not the password");
    assert_eq!((status, code(&body)), (401, "LOGIN_FAILED"), "{body}");
    assert_eq!(cookie, None, "a refused login sets no cookie");

    // A form post (what a cross-site page could send) is not a login.
    let response = sys
        .http
        .post(sys.url("/dashboard/api/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("identifier=admin&password=x")
        .send()
        .unwrap();
    assert!(response.headers().get("set-cookie").is_none());
    let (status, body) = status_and_json(response);
    assert_eq!((status, code(&body)), (415, "JSON_REQUIRED"), "{body}");
    let (status, body) = post(&sys, "/dashboard/api/login", None, None, json!({"who": 1}));
    assert_eq!((status, code(&body)), (400, "INVALID_REQUEST"), "{body}");

    let (status, body, cookie) = login(&sys, "admin", &admin_password(&sys));
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.expect("Set-Cookie");
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(attributes[0].starts_with("plantd_session="), "{cookie}");
    assert_eq!(
        attributes[0].len(),
        "plantd_session=".len() + 43,
        "{cookie}"
    );
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&attribute), "{attribute} in {cookie}");
    }
    assert!(
        !attributes.contains(&"Secure"),
        "no TLS configured: {cookie}"
    );
    assert_eq!(body["data"]["username"], "admin");
    assert!(
        body["data"]["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("system:admin")),
        "{body}"
    );
    assert!(
        body["data"].get("access_token").is_none(),
        "tokens stay in the proxy"
    );

    // Behind TLS: Secure too.
    sys.stop_proxy().unwrap();
    sys.proxy.dashboard.secure_cookie = true;
    sys.start_proxy();
    let (_, _, cookie) = login(&sys, "admin", &admin_password(&sys));
    let cookie = cookie.unwrap();
    assert!(cookie.split(';').any(|a| a.trim() == "Secure"), "{cookie}");
}

#[test]
fn state_changing_requests_need_the_csrf_token_and_unknown_sessions_are_refused() {
    let sys = system(|_| {});
    let browser = log_in(&sys, "admin", &admin_password(&sys));
    let path = "/dashboard/api/state/create-scope";
    let body = json!({"service": "dash.csrf"});

    let (status, reply) = post(&sys, path, Some(&browser.cookie), None, body.clone());
    assert_eq!((status, code(&reply)), (403, "CSRF_MISSING"), "{reply}");
    let (status, reply) = post(
        &sys,
        path,
        Some(&browser.cookie),
        Some("forged"),
        body.clone(),
    );
    assert_eq!((status, code(&reply)), (403, "CSRF_INVALID"), "{reply}");
    let wrong_length = format!("{}x", browser.csrf);
    let (status, reply) = post(
        &sys,
        path,
        Some(&browser.cookie),
        Some(&wrong_length),
        body.clone(),
    );
    assert_eq!((status, code(&reply)), (403, "CSRF_INVALID"), "{reply}");
    // Nothing was created by the refused requests: the first real one creates the scope.
    let (status, reply) = post(
        &sys,
        path,
        Some(&browser.cookie),
        Some(&browser.csrf),
        body.clone(),
    );
    assert_eq!(
        (status, &reply["data"]["status"]),
        (200, &json!("created")),
        "{reply}"
    );

    // No cookie, a forged one, or a forged one with a CSRF token of a real session.
    let (status, reply) = post(&sys, path, None, Some(&browser.csrf), body.clone());
    assert_eq!((status, code(&reply)), (401, "SESSION_REQUIRED"), "{reply}");
    let forged = "plantd_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (status, reply) = post(&sys, path, Some(forged), Some(&browser.csrf), body.clone());
    assert_eq!((status, code(&reply)), (401, "SESSION_INVALID"), "{reply}");
    let live = sys
        .http
        .get(sys.url("/dashboard/api/live"))
        .header("cookie", forged)
        .send()
        .unwrap();
    let (status, reply) = status_and_json(live);
    assert_eq!((status, code(&reply)), (401, "SESSION_INVALID"), "{reply}");

    // The session route says who is logged in, never failing.
    let session = |cookie: Option<&str>| {
        let mut request = sys.http.get(sys.url("/dashboard/api/session"));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        status_and_json(request.send().unwrap())
    };
    let response = sys
        .http
        .get(sys.url("/dashboard/api/session"))
        .header("cookie", &browser.cookie)
        .send()
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let (status, reply) = session(Some(&browser.cookie));
    assert_eq!((status, &reply["data"]["username"]), (200, &json!("admin")));
    assert_eq!(reply["data"]["csrf_token"], json!(browser.csrf));
    let (status, reply) = session(Some(forged));
    assert_eq!(
        (status, &reply["data"]["authenticated"]),
        (200, &json!(false))
    );

    // Only the pages' operations are offered.
    let (status, reply) = post(
        &sys,
        "/dashboard/api/state/backup",
        Some(&browser.cookie),
        Some(&browser.csrf),
        json!({"path": "x.db"}),
    );
    assert_eq!(
        (status, code(&reply)),
        (404, "OPERATION_NOT_ALLOWED"),
        "{reply}"
    );
}

#[test]
fn logout_ends_the_session_at_identity_and_in_the_proxy() {
    let sys = system(|_| {});
    let admin = sys.admin_token();
    let logouts = || {
        let (status, reply) = sys.post(
            "/api/v1/services/org.plantd.Identity/audit/list",
            json!({"action": "logout"}),
            Some(&admin),
        );
        assert_eq!(status, 200, "{reply}");
        reply["data"]["records"].as_array().unwrap().len()
    };
    let before = logouts();
    let browser = log_in(&sys, "admin", &admin_password(&sys));
    let live = sys
        .http
        .get(sys.url("/dashboard/api/live"))
        .header("cookie", &browser.cookie)
        .send()
        .unwrap();
    assert_eq!(live.status(), 200);
    let mut live = SseReader::new(live);
    assert_eq!(live.next_event().unwrap().event, "snapshot");
    let (status, reply) = post(
        &sys,
        "/dashboard/api/logout",
        Some(&browser.cookie),
        None,
        json!({}),
    );
    assert_eq!(
        (status, code(&reply)),
        (403, "CSRF_MISSING"),
        "logout needs CSRF too"
    );

    let response = sys
        .http
        .post(sys.url("/dashboard/api/logout"))
        .header("cookie", &browser.cookie)
        .header("x-csrf-token", &browser.csrf)
        .send()
        .unwrap();
    let cleared = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, reply) = status_and_json(response);
    assert_eq!(
        (status, &reply["data"]["revoked"]),
        (200, &json!(true)),
        "{reply}"
    );
    assert!(cleared.starts_with("plantd_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // Identity ended the session (it audits the logout) ...
    assert_eq!(logouts(), before + 1);
    // ... the open live stream ends ...
    while live.next_event().is_some() {}
    // ... and the proxy no longer takes the cookie.
    let (status, reply) = post(
        &sys,
        "/dashboard/api/state/list-scopes",
        Some(&browser.cookie),
        Some(&browser.csrf),
        json!({}),
    );
    assert_eq!((status, code(&reply)), (401, "SESSION_INVALID"), "{reply}");
}

#[test]
fn calls_run_with_the_users_permissions_and_pass_denials_on() {
    let sys = system(|_| {});
    let admin = sys.admin_token();
    sys.user_with(&admin, "reader", &["state:data:read", "state:scope:list"]);
    let reader = log_in(&sys, "reader", "a long enough passphrase");
    let admin_browser = log_in(&sys, "admin", &admin_password(&sys));
    let set = |browser: &Browser, value: Value| {
        post(
            &sys,
            "/dashboard/api/state/state-set",
            Some(&browser.cookie),
            Some(&browser.csrf),
            json!({"service": "dash.perm", "key": "k", "value": value}),
        )
    };
    let (status, reply) = set(&admin_browser, json!(1));
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = set(&reader, json!(2));
    assert_eq!(
        (status, code(&reply)),
        (403, "PERMISSION_DENIED"),
        "{reply}"
    );
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("state"),
        "the service's message names the permission: {reply}"
    );
    // A token in the body does not replace the session's.
    let (status, reply) = post(
        &sys,
        "/dashboard/api/state/state-get",
        Some(&reader.cookie),
        Some(&reader.csrf),
        json!({"service": "dash.perm", "key": "k", "token": "garbage"}),
    );
    assert_eq!(
        (status, &reply["data"]["value"]),
        (200, &json!(1)),
        "{reply}"
    );
}

/// The value of an unlabelled counter in a Prometheus text page.
fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[test]
fn ten_open_dashboards_cost_the_broker_the_same_mmi_traffic_as_one() {
    let unused = free_port();
    let sys = system(|proxy| {
        proxy.dashboard.poll_ms = 100;
        proxy.dashboard.health = vec![
            HealthTarget {
                name: "proxy".into(),
                url: format!("http://127.0.0.1:{}/healthz", proxy.health_port),
            },
            HealthTarget {
                name: "nothing".into(),
                url: format!("http://127.0.0.1:{unused}/healthz"),
            },
        ];
    });
    let browser = log_in(&sys, "admin", &admin_password(&sys));
    let client = sys.client();
    let open = || {
        let response = reqwest::blocking::Client::builder()
            .timeout(WAIT_DEADLINE * 3)
            .build()
            .unwrap()
            .get(sys.url("/dashboard/api/live"))
            .header("cookie", &browser.cookie)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        SseReader::new(response)
    };
    let polls = || {
        let page = sys.http.get(sys.health_url("/metrics")).send().unwrap();
        counter(&page.text().unwrap(), "plantd_proxy_dashboard_polls_total")
    };
    let mmi = || {
        client.broker_info().unwrap().counters["mmi_requests"]
            .as_f64()
            .unwrap()
    };
    // MMI requests the broker answered per dashboard poll, over `snapshots` snapshots read
    // from `stream`, while `others` are open too (drained by threads).
    let measure = |stream: &mut SseReader, snapshots: usize| {
        let (polls_before, mmi_before) = (polls(), mmi());
        for _ in 0..snapshots {
            let event = stream.next_event().expect("a snapshot");
            assert_eq!(event.event, "snapshot");
        }
        let (polls_after, mmi_after) = (polls(), mmi());
        (mmi_after - mmi_before) / (polls_after - polls_before).max(1.0)
    };

    let mut first = open();
    // Wait until the snapshots show the services and both health targets.
    wait_until("a snapshot with echo and the health targets", || {
        let snapshot = first.next_event().unwrap().data;
        let echo = snapshot["services"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == common::ECHO && s["workers"].as_u64() >= Some(1))
        });
        let health: Vec<(String, String)> = snapshot["health"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap().to_owned(),
                            p["status"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        echo && health
            == [
                ("proxy".to_owned(), "UP".to_owned()),
                ("nothing".to_owned(), "UNREACHABLE".to_owned()),
            ]
    });
    let one = measure(&mut first, 30);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drains: Vec<_> = (0..9)
        .map(|_| {
            let mut stream = open();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    stream.next_event().expect("a snapshot");
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    let ten = measure(&mut first, 30);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for drain in drains {
        assert!(drain.join().unwrap() > 0, "every page receives snapshots");
    }
    // A poll is mmi.broker, mmi.services and mmi.workers per service with workers (echo,
    // state, identity): 5. The proxy's own once-a-second broker probe and this test's two
    // counter reads add a little; a poll under way when a counter is read makes the count of
    // a window up to one poll's requests off. Ten pages polling for themselves would be ten
    // times as many.
    assert!(
        (4.0..8.0).contains(&one),
        "one page: {one} MMI requests per poll"
    );
    assert!(
        ten < one + 2.0,
        "ten pages: {ten} MMI requests per poll, one page: {one}"
    );
}

#[test]
fn a_page_gets_its_bus_tail_and_the_snapshots_on_one_stream() {
    let sys = system(|proxy| proxy.dashboard.poll_ms = 100);
    let browser = log_in(&sys, "admin", &admin_password(&sys));
    let live = |query: &str| {
        reqwest::blocking::Client::builder()
            .timeout(WAIT_DEADLINE * 3)
            .build()
            .unwrap()
            .get(sys.url(&format!("/dashboard/api/live{query}")))
            .header("cookie", &browser.cookie)
            .send()
            .unwrap()
    };
    // An unknown bus is refused before any stream opens.
    let (status, body) = status_and_json(live("?bus=nope"));
    assert_eq!((status, code(&body)), (404, "BUS_NOT_FOUND"), "{body}");
    // And no session, no stream.
    let (status, body) = status_and_json(
        sys.http
            .get(sys.url("/dashboard/api/live?bus=metric"))
            .send()
            .unwrap(),
    );
    assert_eq!((status, code(&body)), (401, "SESSION_REQUIRED"), "{body}");

    let response = live("?bus=metric&prefix=org.plantd.metric.dash");
    assert_eq!(response.status(), 200);
    let mut stream = SseReader::new(response);
    let publisher =
        plantd_worker_sdk::bus::Publisher::connect(&sys.bus("metric").frontend).unwrap();
    let metric = plantd_worker_sdk::bus::Metric::new("dash", "pressure", 1.5);
    let other = plantd_worker_sdk::bus::Metric::new("elsewhere", "pressure", 9.0);
    // Publish until a reading comes (the subscription reaches the broker in the background),
    // reading the stream on its own thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let (mut snapshots, mut messages) = (0, 0);
        while let Some(event) = stream.next_event() {
            match event.event.as_str() {
                "snapshot" => snapshots += 1,
                "bus" => {
                    messages += 1;
                    let _ = tx.send(event.data);
                }
                other => panic!("unexpected event {other}"),
            }
            // Snapshots after the first reading too: the two feeds interleave.
            if messages >= 1 && snapshots >= 2 && event.event == "snapshot" {
                break;
            }
        }
        (snapshots, messages)
    });
    let mut readings = Vec::new();
    wait_until("a reading on the live stream", || {
        publisher.publish_metric(&other).unwrap();
        publisher.publish_metric(&metric).unwrap();
        readings.extend(rx.recv_timeout(std::time::Duration::from_millis(100)));
        !readings.is_empty()
    });
    // Snapshots keep coming on the same stream; the reader stops after two of them.
    wait_until("snapshots beside the readings", || {
        publisher.publish_metric(&metric).unwrap();
        readings.extend(rx.recv_timeout(std::time::Duration::from_millis(100)));
        reader.is_finished()
    });
    let (snapshots, messages) = reader.join().unwrap();
    assert!(
        snapshots >= 2 && messages >= 1,
        "{snapshots} snapshots, {messages} readings"
    );
    for reading in &readings {
        assert_eq!(
            reading["topic"],
            metric.topic(),
            "only the prefix: {reading}"
        );
        assert_eq!(reading["payload"]["value"], 1.5);
    }
    let page = sys.http.get(sys.health_url("/metrics")).send().unwrap();
    let page = page.text().unwrap();
    let bus_streams = page
        .lines()
        .find_map(|l| l.strip_prefix("plantd_proxy_sse_streams{kind=\"bus\"} "))
        .map_or(0.0, |v| v.trim().parse().unwrap());
    assert_eq!(bus_streams, 0.0, "the tail is not a stream of its own");
}
