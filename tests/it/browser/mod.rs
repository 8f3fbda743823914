//! Headless Chromium for browser tests of the operator console: each `Browser` owns a
//! chromedriver and a throw-away profile, and offers the few verbs console tests read
//! like (fill a field by its label, click a button by its text, console errors,
//! unlabelled controls, screenshots for the docs).
//!
//! Chromium and chromedriver come from Debian's `chromium` and `chromium-driver`
//! packages, which `ops/test` installs; when either is missing `Browser::open` panics
//! saying so, so a browser test never passes by not running.

mod console;
mod harness;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::elements::{Element, ElementRef};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::http_client;

/// How long `text_of` waits for its element to appear (a page still loading or a
/// script still rendering), and how long a page load may take.
const ELEMENT_WAIT: Duration = Duration::from_secs(5);
const PAGE_LOAD_MS: u64 = 15_000;
const DRIVER_START: Duration = Duration::from_secs(20);

/// The W3C key under which a script result carries a DOM element.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

const INSTALL_HINT: &str =
    "ops/test installs it (or: sudo apt-get install -y chromium chromium-driver)";

/// A headless Chromium session. Dropping it ends the session, Chromium, chromedriver
/// and the profile directory, also when the test panics.
pub struct Browser {
    client: Client,
    session_id: Option<String>,
    driver: Driver,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile at 1280×900.
    pub async fn open() -> Browser {
        let chromium = chromium_binary();
        let driver = Driver::start().await;
        let profile = new_profile_dir();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    // Chromium exits when chromedriver's end of the pipe closes, so a
                    // killed chromedriver never leaves a browser behind (with the
                    // default debugging port, it does).
                    "--remote-debugging-pipe",
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    "--mute-audio",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    // The first tab would be the new-tab page, whose navigation can take
                    // seconds to start, and chromedriver's first command waits for it.
                    "session.restore_on_startup": 4,
                    "session.startup_urls": ["about:blank"],
                    // no password manager prompts or breach checks on the login form
                    "credentials_enable_service": false,
                    "profile.password_manager_enabled": false,
                    "profile.password_manager_leak_detection": false,
                },
            },
            "goog:loggingPrefs": { "browser": "ALL" },
            "timeouts": { "pageLoad": PAGE_LOAD_MS, "script": PAGE_LOAD_MS },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start Chromium ({}): {e}",
                    chromium.display()
                )
            });
        let session_id = client.session_id().await.unwrap();
        Browser {
            client,
            session_id,
            driver,
            profile,
        }
    }

    /// The underlying fantoccini client, for anything the helpers don't cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Path (and query) of the page shown now.
    pub async fn current_path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Types `value` into the one form control whose `<label>` text (or `aria-label`)
    /// is `field`, else the one matching `field` as a CSS selector. A `<select>` picks
    /// the option with that text, else that value. Panics when none or several match.
    pub async fn fill(&self, field: &str, value: &str) {
        let el = self.one(FIND_CONTROL_JS, field, "form control").await;
        let tag = el.tag_name().await.unwrap().to_ascii_lowercase();
        if tag == "select" {
            if el.select_by_label(value).await.is_err() {
                el.select_by_value(value)
                    .await
                    .unwrap_or_else(|e| panic!("{field:?} has no option {value:?}: {e}"));
            }
            return;
        }
        el.clear().await.unwrap();
        el.send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("typing into {field:?}: {e}"));
    }

    /// Clicks the one visible button (`<button>`, `input[type=submit|button|reset]`,
    /// `[role=button]`) whose text, value or `aria-label` is `text`. When the click
    /// submits a form, the next page has loaded when this returns. Panics when none or
    /// several match.
    pub async fn click_button(&self, text: &str) {
        let el = self.one(FIND_BUTTON_JS, text, "visible button").await;
        self.click_and_settle(&el, text).await;
    }

    /// Clicks the first element matching `css`; when that submits a form or follows a
    /// link, the next page has loaded when this returns.
    pub async fn click(&self, css: &str) {
        let el = self.wait_for(css).await;
        self.click_and_settle(&el, css).await;
    }

    /// Rendered text of the first element matching `css`, waiting for it to appear.
    /// A part of the page that a script replaces (the overview's live figures) may go
    /// between finding the element and reading it: then it is found again.
    pub async fn text_of(&self, css: &str) -> String {
        let deadline = Instant::now() + ELEMENT_WAIT;
        loop {
            match self.wait_for(css).await.text().await {
                Ok(text) => return text,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                        && Instant::now() < deadline => {}
                Err(e) => panic!("reading {css}: {e}"),
            }
        }
    }

    /// Runs `script` (a function body: `return …`) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Emulates a desktop viewport of exactly `width`×`height` CSS pixels (the window
    /// size would include the browser's own frame). Kept across navigations.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        self.device_metrics(width, height, false).await;
    }

    /// Emulates a phone: a 390×844 viewport that honours `<meta name="viewport">` the
    /// way a phone does (without that tag the page is laid out 980 px wide).
    pub async fn emulate_phone(&self) {
        self.device_metrics(390, 844, true).await;
    }

    /// A PNG of the viewport. With `PV_SCREENSHOTS=1` it is also written to
    /// `docs/console/<name>.png`; otherwise the tree is left alone.
    pub async fn screenshot(&self, name: &str) -> Vec<u8> {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "screenshot name {name:?}: use letters, digits, - and _"
        );
        let png = self.client.screenshot().await.unwrap();
        if std::env::var("PV_SCREENSHOTS").as_deref() == Ok("1") {
            let path = screenshot_path(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &png)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        png
    }

    /// Messages the page logged at level SEVERE since the previous call (or since the
    /// browser opened): `console.error`, uncaught exceptions, failed loads (a missing
    /// favicon too), CSP violations.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self
            .chrome_command("se/log", json!({ "type": "browser" }))
            .await;
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Every visible-kind form control (not hidden, not a button) that no `<label>` with
    /// text, `aria-label` or `aria-labelledby` names, described as `tag[type]#id[name=…]`.
    pub async fn unlabelled_controls(&self) -> Vec<String> {
        let found = self.eval(&with_text_helpers(UNLABELLED_JS)).await;
        serde_json::from_value(found).unwrap()
    }

    /// chromedriver's click returns before a navigation the click queued (a form
    /// submission starts one task later) has begun, so a test would read the old page.
    /// The page is marked before the click and watched for a submit or link click
    /// nobody prevented; if one happened, wait until a new document has loaded.
    async fn click_and_settle(&self, el: &Element, what: &str) {
        let mark = uuid::Uuid::new_v4().simple().to_string();
        self.client
            .execute(ARM_NAVIGATION_JS, vec![json!(mark)])
            .await
            .unwrap_or_else(|e| panic!("before clicking {what:?}: {e}"));
        el.click()
            .await
            .unwrap_or_else(|e| panic!("clicking {what:?}: {e}"));
        let deadline = Instant::now() + Duration::from_millis(PAGE_LOAD_MS);
        loop {
            // a script can fail while one document replaces the other: ask again
            let state = self
                .client
                .execute(NAVIGATION_STATE_JS, vec![json!(mark)])
                .await;
            match state.as_ref().ok().and_then(Value::as_str) {
                Some("stayed" | "loaded") => return,
                _ if Instant::now() > deadline => panic!(
                    "clicking {what:?} started a navigation that did not load within \
                     {PAGE_LOAD_MS} ms (last state: {state:?})"
                ),
                _ => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    async fn device_metrics(&self, width: u32, height: u32, mobile: bool) {
        self.chrome_command(
            "goog/cdp/execute",
            json!({
                "cmd": "Emulation.setDeviceMetricsOverride",
                "params": {
                    "width": width,
                    "height": height,
                    "deviceScaleFactor": 1,
                    "mobile": mobile,
                },
            }),
        )
        .await;
    }

    async fn wait_for(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(ELEMENT_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element matches {css} within {ELEMENT_WAIT:?}: {e}"))
    }

    /// The single element `script` (given `key`) returns, or a panic naming the problem.
    async fn one(&self, script: &str, key: &str, what: &str) -> Element {
        let found = self
            .client
            .execute(&with_text_helpers(script), vec![json!(key)])
            .await
            .unwrap_or_else(|e| panic!("looking for {what} {key:?}: {e}"));
        let mut els: Vec<Element> = found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v[ELEMENT_KEY].as_str())
            .map(|id| {
                Element::from_element_id(self.client.clone(), ElementRef::from(id.to_owned()))
            })
            .collect();
        match els.len() {
            1 => els.remove(0),
            0 => panic!("no {what} {key:?} on {}", self.current_path().await),
            n => panic!(
                "{n} of {what} {key:?} on {}: use a CSS selector",
                self.current_path().await
            ),
        }
    }

    /// A chromedriver command outside W3C WebDriver (`/session/{id}/<path>`).
    async fn chrome_command(&self, path: &'static str, body: Value) -> Value {
        self.client
            .issue_cmd(ChromeCommand { path, body })
            .await
            .unwrap_or_else(|e| panic!("chromedriver {path}: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // fantoccini ends its session from a task of the test's runtime, which is gone
        // by now when the test ended (or panicked): end it here, so Chromium exits
        // before its profile is removed. chromedriver dies with `kill_on_drop`.
        if let Some(id) = &self.session_id {
            end_session(self.driver.port, id);
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One chromedriver on a port it chose itself (`--port=0`, read back from its banner).
struct Driver {
    _child: Child,
    port: u16,
}

impl Driver {
    async fn start() -> Driver {
        let bin = on_path(&["chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver is not on PATH; {INSTALL_HINT}"));
        let mut child = Command::new(&bin)
            .arg("--port=0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let banner = tokio::time::timeout(DRIVER_START, async {
            let mut seen = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    return Ok(port);
                }
                seen.push(line);
            }
            Err(seen.join("\n"))
        })
        .await;
        let port = match banner {
            Ok(Ok(port)) => port,
            Ok(Err(output)) => panic!("chromedriver exited without listening:\n{output}"),
            Err(_) => panic!("chromedriver did not listen within {DRIVER_START:?}"),
        };
        // chromedriver may still write to stdout; a full pipe would block it
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let driver = Driver {
            _child: child,
            port,
        };
        driver.wait_ready().await;
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    async fn wait_ready(&self) {
        let client = http_client();
        let deadline = Instant::now() + DRIVER_START;
        loop {
            let ready = match client.get(format!("{}status", self.url())).send().await {
                Ok(resp) => resp
                    .json::<Value>()
                    .await
                    .is_ok_and(|s| s["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver's /status is not ready after {DRIVER_START:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[derive(Debug)]
struct ChromeCommand {
    path: &'static str,
    body: Value,
}

impl WebDriverCompatibleCommand for ChromeCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.to_string()))
    }
}

/// `DELETE /session/{id}` over a plain blocking socket (Drop can't await); bounded, and
/// quiet when chromedriver is already gone. chromedriver keeps the connection open, so
/// the response ends at its Content-Length, not at EOF.
fn end_session(port: u16, session_id: &str) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE /session/{session_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while !http_response_complete(&response) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
        }
    }
}

fn http_response_complete(response: &[u8]) -> bool {
    let Some(head_end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    let body_len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    response.len() >= head_end + 4 + body_len
}

pub fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/console")
        .join(format!("{name}.png"))
}

/// A fresh profile directory, on tmpfs when there is one: a profile is some 200 files
/// Chromium writes at start and Drop removes, which alone took ~0.4 s of every test on
/// this machine's ext4 /tmp and takes ~2 ms on /dev/shm.
fn new_profile_dir() -> PathBuf {
    let name = format!("pv-chromium-{}", uuid::Uuid::new_v4().simple());
    let tmp = std::env::temp_dir();
    [Path::new("/dev/shm"), tmp.as_path()]
        .iter()
        .map(|parent| parent.join(&name))
        .find(|dir| std::fs::create_dir(dir).is_ok())
        .unwrap_or_else(|| panic!("can't create {name} in /dev/shm or {}", tmp.display()))
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `PV_CHROMIUM` when set, else `chromium` or `chromium-browser` from PATH.
fn chromium_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PV_CHROMIUM") {
        return PathBuf::from(path);
    }
    on_path(&["chromium", "chromium-browser"])
        .unwrap_or_else(|| panic!("chromium is not on PATH; {INSTALL_HINT}"))
}

/// Text helpers every script below starts with (see `with_text_helpers`): `norm`
/// collapses whitespace, `ownText` is a label's text without its nested controls'.
const TEXT_HELPERS_JS: &str = r#"
const norm = s => (s || '').replace(/\s+/g, ' ').trim();
const ownText = label => {
  const copy = label.cloneNode(true);
  copy.querySelectorAll('input, select, textarea').forEach(c => c.remove());
  return norm(copy.textContent);
};
"#;

fn with_text_helpers(script: &str) -> String {
    format!("{TEXT_HELPERS_JS}{script}")
}

/// Controls named `arguments[0]` by their label's own text (nested controls left out),
/// else by `aria-label`, else matching it as a CSS selector.
const FIND_CONTROL_JS: &str = r#"
const key = arguments[0];
const want = norm(key);
const byLabel = [...new Set([...document.querySelectorAll('label')]
  .filter(l => l.control && ownText(l) === want).map(l => l.control))];
if (byLabel.length) return byLabel;
const byAria = [...document.querySelectorAll('input, select, textarea')]
  .filter(c => norm(c.getAttribute('aria-label')) === want);
if (byAria.length) return byAria;
try { return [...document.querySelectorAll(key)]; } catch (_) { return []; }
"#;

const FIND_BUTTON_JS: &str = r#"
const want = norm(arguments[0]);
return [...document.querySelectorAll(
  'button, input[type=submit], input[type=button], input[type=reset], [role=button]')]
  .filter(b => b.getClientRects().length > 0)
  .filter(b => [b.tagName === 'INPUT' ? b.value : b.textContent, b.getAttribute('aria-label')]
    .some(t => norm(t) === want));
"#;

/// Marks the document with `arguments[0]` and records the submit and click events the
/// coming click causes (capture phase: before any page handler can stop them).
const ARM_NAVIGATION_JS: &str = r#"
window.__pvMark = arguments[0];
window.__pvEvents = [];
const record = e => window.__pvEvents.push(e);
document.addEventListener('submit', record, { capture: true });
document.addEventListener('click', record, { capture: true });
window.__pvDisarm = () => {
  document.removeEventListener('submit', record, { capture: true });
  document.removeEventListener('click', record, { capture: true });
};
"#;

/// "loaded": another document, fully loaded; "leaving": a submit or link click nobody
/// prevented is under way; "stayed": the click changed this page at most.
const NAVIGATION_STATE_JS: &str = r#"
if (window.__pvMark !== arguments[0]) return document.readyState === 'complete' ? 'loaded' : 'loading';
const here = u => u.split('#')[0];
const sameTab = t => !t || t === '_self';
const leaves = e => {
  if (e.defaultPrevented) return false;
  if (e.type === 'submit') {
    return sameTab((e.submitter && e.submitter.getAttribute('formtarget')) || e.target.getAttribute('target'));
  }
  const a = e.target.closest && e.target.closest('a[href]');
  if (!a || a.hasAttribute('download') || !sameTab(a.getAttribute('target'))) return false;
  return here(a.href) !== here(location.href) || !new URL(a.href).hash;
};
const leaving = (window.__pvEvents || []).some(leaves);
if (!leaving) window.__pvDisarm();
return leaving ? 'leaving' : 'stayed';
"#;

const UNLABELLED_JS: &str = r#"
const skip = ['hidden', 'submit', 'button', 'reset', 'image'];
const named = el =>
  [...(el.labels || [])].some(l => ownText(l) !== '') ||
  norm(el.getAttribute('aria-label')) !== '' ||
  (norm(el.getAttribute('aria-labelledby')) !== '' &&
    norm(el.getAttribute('aria-labelledby')).split(' ')
      .every(id => norm((document.getElementById(id) || {}).textContent)));
return [...document.querySelectorAll('input, select, textarea')]
  .filter(el => !(el.tagName === 'INPUT' && skip.includes((el.type || '').toLowerCase())))
  .filter(el => !named(el))
  .map(el => el.tagName.toLowerCase() +
    (el.tagName === 'INPUT' ? `[type=${el.type}]` : '') +
    (el.id ? `#${el.id}` : '') +
    (el.name ? `[name=${el.name}]` : ''));
"#;
