//! A real headless Chromium driven through WebDriver (`fantoccini`) for the dashboard tests.
//!
//! [`Browser::start`] starts `chromedriver` on a free loopback port (in its own process group,
//! so Chromium goes with it), waits for its `/status`, and opens a session with a fresh profile
//! in a temporary directory. Everything is stopped when the [`Browser`] is dropped. Without
//! Chromium or chromedriver the tests are skipped with a message, unless
//! `PLANTD_REQUIRE_BROWSER` is set (as in CI), where that is a failure.
//!
//! The methods block (each drives its own small tokio runtime); waits poll the DOM until a
//! deadline, never sleep for a fixed time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::wd::WindowHandle;
use fantoccini::{Client, ClientBuilder, Locator};
use plantd_worker_sdk::testing::{free_port, wait_until, WAIT_DEADLINE};
use serde_json::{json, Value};

use super::Background;

/// Where Debian puts them; `PLANTD_CHROMIUM` / `PLANTD_CHROMEDRIVER` point elsewhere.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a wait for the page may take (generous: a loaded 2-core machine).
pub const PAGE_DEADLINE: Duration = Duration::from_secs(30);

/// A browser session, closed (and chromedriver and Chromium stopped) on drop.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver_url: String,
    session: String,
    /// Declared after the client: chromedriver goes once the session is closed.
    _driver: DriverProcess,
    _profile: tempfile::TempDir,
}

/// chromedriver in its own process group; the whole group is killed on drop.
struct DriverProcess(Option<Background>, u32);

impl Drop for DriverProcess {
    fn drop(&mut self) {
        // Chromium is a child of chromedriver, in its process group: kill them all.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.1)])
            .stderr(Stdio::null())
            .status();
        drop(self.0.take());
    }
}

fn binary(variable: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    path.is_file().then_some(path)
}

impl Browser {
    /// A headless Chromium at 1280x800, or `None` (with a message) when it is not installed
    /// and `PLANTD_REQUIRE_BROWSER` is unset.
    pub fn start(test: &str) -> Option<Browser> {
        let (chromium, driver) = match (
            binary("PLANTD_CHROMIUM", CHROMIUM),
            binary("PLANTD_CHROMEDRIVER", CHROMEDRIVER),
        ) {
            (Some(chromium), Some(driver)) => (chromium, driver),
            _ => {
                let message = format!(
                    "{test}: Chromium ({CHROMIUM}) or chromedriver ({CHROMEDRIVER}) is not installed"
                );
                if std::env::var_os("PLANTD_REQUIRE_BROWSER").is_some() {
                    panic!("{message}, and PLANTD_REQUIRE_BROWSER is set");
                }
                eprintln!(
                    "SKIPPED {message} (apt-get install chromium chromium-driver; CI sets PLANTD_REQUIRE_BROWSER=1)"
                );
                return None;
            }
        };
        let port = free_port();
        let mut command = Command::new(&driver);
        command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("chromedriver starts");
        let pid = child.id();
        let driver_process = DriverProcess(Some(Background::new(child, "chromedriver")), pid);
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::new();
        wait_until("chromedriver to be ready", || {
            http.get(format!("{driver_url}/status"))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|s| s["value"]["ready"] == json!(true))
        });
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = runtime
            .block_on(async {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                ClientBuilder::new(connector)
                    .capabilities(capabilities.as_object().unwrap().clone())
                    .connect(&driver_url)
                    .await
            })
            .expect("a Chromium session");
        let session = runtime
            .block_on(client.session_id())
            .unwrap()
            .expect("a session id");
        Some(Browser {
            runtime,
            client: Some(client),
            driver_url,
            session,
            _driver: driver_process,
            _profile: profile,
        })
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("open")
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.runtime.block_on(self.client().goto(url)).unwrap();
    }

    /// Runs `script` (a function body: `return ...`) in the page.
    pub fn js(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls the JavaScript expression `expr` until it is truthy (or `timeout` passes) and
    /// returns its value.
    pub fn try_wait(&self, expr: &str, timeout: Duration) -> Option<Value> {
        let end = Instant::now() + timeout;
        let script = format!("try {{ return ({expr}); }} catch (e) {{ return null; }}");
        loop {
            let value = self.js(&script);
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return Some(value);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `expr` until it is truthy, failing the test after [`PAGE_DEADLINE`].
    pub fn wait(&self, what: &str, expr: &str) -> Value {
        match self.try_wait(expr, PAGE_DEADLINE) {
            Some(value) => value,
            None => {
                let text = self.js("return document.body.innerText.slice(0, 3000);");
                panic!("timed out waiting until {what} ({expr}); page text: {text}");
            }
        }
    }

    /// Clicks the element `css`.
    pub fn click(&self, css: &str) {
        self.runtime
            .block_on(async {
                let element = self.client().find(Locator::Css(css)).await?;
                element.click().await
            })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Replaces the text of the input `css` with `text`, typing it.
    pub fn fill(&self, css: &str, text: &str) {
        self.runtime
            .block_on(async {
                let element = self.client().find(Locator::Css(css)).await?;
                element.clear().await?;
                element.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("fill {css}: {e}"));
    }

    /// Chooses `value` in the select `css`.
    pub fn select(&self, css: &str, value: &str) {
        self.runtime
            .block_on(async {
                let element = self.client().find(Locator::Css(css)).await?;
                element.select_by_value(value).await
            })
            .unwrap_or_else(|e| panic!("select {css}: {e}"));
    }

    /// Presses `key` (with Shift held when `shift`) through WebDriver key actions, as a user
    /// would: the key goes to whatever has the focus.
    pub fn press(&self, key: Key, shift: bool) {
        let key = char::from(key);
        let shift_key = char::from(Key::Shift);
        let mut actions = KeyActions::new("keyboard".to_owned());
        if shift {
            actions = actions.then(KeyAction::Down { value: shift_key });
        }
        actions = actions
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        if shift {
            actions = actions.then(KeyAction::Up { value: shift_key });
        }
        self.runtime
            .block_on(self.client().perform_actions(actions))
            .unwrap_or_else(|e| panic!("press {key:?}: {e}"));
    }

    /// Types `text` into the focused element, key by key.
    pub fn type_text(&self, text: &str) {
        let mut actions = KeyActions::new("keyboard".to_owned());
        for c in text.chars() {
            actions = actions
                .then(KeyAction::Down { value: c })
                .then(KeyAction::Up { value: c });
        }
        self.runtime
            .block_on(self.client().perform_actions(actions))
            .unwrap_or_else(|e| panic!("type {text:?}: {e}"));
    }

    /// Opens a new tab and switches to it; returns its handle.
    pub fn new_tab(&self) -> WindowHandle {
        self.runtime
            .block_on(async {
                let tab = self.client().new_window(true).await?;
                self.client().switch_to_window(tab.handle.clone()).await?;
                Ok::<_, fantoccini::error::CmdError>(tab.handle)
            })
            .unwrap_or_else(|e| panic!("a new tab: {e}"))
    }

    /// The handle of the current tab.
    pub fn current_tab(&self) -> WindowHandle {
        self.runtime.block_on(self.client().window()).unwrap()
    }

    /// Switches to the tab `handle`.
    pub fn switch_to(&self, handle: &WindowHandle) {
        self.runtime
            .block_on(self.client().switch_to_window(handle.clone()))
            .unwrap_or_else(|e| panic!("switch to {handle:?}: {e}"));
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.runtime
            .block_on(self.client().set_window_size(width, height))
            .unwrap();
    }

    /// Saves a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self.runtime.block_on(self.client().screenshot()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// `(name, HttpOnly, SameSite)` of every cookie of the page.
    pub fn cookies(&self) -> Vec<(String, Option<bool>, Option<String>)> {
        self.runtime
            .block_on(self.client().get_all_cookies())
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c.name().to_owned(),
                    c.http_only(),
                    c.same_site().map(|s| s.to_string()),
                )
            })
            .collect()
    }

    /// The browser console's entries since the last call (chromedriver's log endpoint).
    pub fn console(&self) -> Vec<Value> {
        let response: Value = reqwest::blocking::Client::new()
            .post(format!(
                "{}/session/{}/se/log",
                self.driver_url, self.session
            ))
            .json(&json!({"type": "browser"}))
            .send()
            .and_then(|r| r.json())
            .expect("the browser log");
        response["value"].as_array().cloned().unwrap_or_default()
    }

    /// The console's errors since the last call.
    pub fn console_errors(&self) -> Vec<Value> {
        self.console()
            .into_iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(WAIT_DEADLINE, client.close()).await });
        }
    }
}
