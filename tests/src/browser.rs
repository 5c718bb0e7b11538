//! A real headless Chromium driven over the DevTools protocol, for tests of the page leash serves.
//! Chromium picks its own debugging port (`--remote-debugging-port=0`) and names it in
//! `DevToolsActivePort` in the profile; the test speaks the protocol over one WebSocket, attached
//! to one tab in flat mode. Every wait is bounded.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD, Engine};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::{net::TcpStream, process::Child};
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};

/// How long Chromium may take to start and name its port.
const START: Duration = Duration::from_secs(30);
/// How long one protocol call may take.
const CALL: Duration = Duration::from_secs(30);
/// How long `wait_for` waits for a condition.
const WAIT: Duration = Duration::from_secs(20);

/// One headless Chromium with one tab, killed on drop.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// Debian's Chromium (or another Chromium on `PATH`).
pub fn chromium_binary() -> &'static str {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium is installed (.ci/run installs Debian's chromium)")
}

impl Browser {
    /// Starts Chromium (headless, as root: no sandbox; no background networking: this machine
    /// has only loopback) and opens `url` in a tab.
    pub async fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().expect("a profile dir");
        let child = tokio::process::Command::new(chromium_binary())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-proxy-server",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let endpoint = devtools_endpoint(&profile.path().join("DevToolsActivePort")).await;
        let (socket, _) = tokio::time::timeout(CALL, tokio_tungstenite::connect_async(endpoint))
            .await
            .expect("the DevTools socket answers in time")
            .expect("the DevTools socket opens");
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser
            .call_browser("Target.createTarget", json!({ "url": url }))
            .await;
        let attach = json!({ "targetId": target["targetId"], "flatten": true });
        let attached = browser.call_browser("Target.attachToTarget", attach).await;
        browser.session = attached["sessionId"].as_str().expect("a session").into();
        browser
            .wait_for("document.readyState === 'complete'", "the page loads")
            .await;
        browser
    }

    /// A call on the tab.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = Some(self.session.clone());
        let reply = self.send(method, params, session).await;
        reply.unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    async fn call_browser(&mut self, method: &str, params: Value) -> Value {
        let reply = self.send(method, params, None).await;
        reply.unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    /// Sends one command and reads until its answer (events in between are skipped): its
    /// result, or the error Chromium answered.
    async fn send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<String>,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let answer = async {
            self.socket
                .send(Message::text(command.to_string()))
                .await
                .expect("the DevTools socket takes the command");
            while let Some(message) = self.socket.next().await {
                let Ok(Message::Text(text)) = message else {
                    continue;
                };
                let reply: Value = serde_json::from_str(&text).expect("DevTools speaks JSON");
                if reply["id"] == json!(id) {
                    return reply;
                }
            }
            panic!("the DevTools socket closed during {method}");
        };
        let reply = tokio::time::timeout(CALL, answer)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer within {CALL:?}"));
        match reply["error"].is_null() {
            true => Ok(reply["result"].clone()),
            false => Err(reply["error"].clone()),
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .await
            .unwrap_or_else(|error| panic!("{expression}: {error}"))
    }

    /// Like `eval`, with the failure as a value: no document yet (while one loads), or the
    /// expression threw.
    async fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let params =
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        let session = Some(self.session.clone());
        let result = self.send("Runtime.evaluate", params, session).await?;
        match result["exceptionDetails"].is_null() {
            true => Ok(result["result"]["value"].clone()),
            false => Err(result["exceptionDetails"].clone()),
        }
    }

    /// Waits (bounded) until `expression` is truthy in the page; returns its value. `what` names
    /// the condition when it never holds. While a document loads there is none to ask: not yet.
    pub async fn wait_for(&mut self, expression: &str, what: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.try_eval(expression).await;
            let truthy = value.as_ref().is_ok_and(|value| {
                !matches!(value, Value::Null | Value::Bool(false))
                    && *value != json!(0)
                    && *value != json!("")
            });
            if truthy {
                return value.unwrap_or_default();
            }
            if Instant::now() > deadline {
                let text = self.try_eval("document.body.innerText").await;
                panic!("{what}: not within {WAIT:?} ({value:?}); the page says: {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `selector` names as a person would: the mouse pressed and released at
    /// its centre (so whatever is drawn on top there gets the click).
    pub async fn click(&mut self, selector: &str) {
        let selector = serde_json::to_string(selector).expect("a string");
        let centre = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({selector}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ))
            .await;
        let (x, y) = (centre[0].clone(), centre[1].clone());
        assert!(x.is_number(), "{selector}: no such element");
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            let event = json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 });
            self.call("Input.dispatchMouseEvent", event).await;
        }
    }

    /// Focuses the field `selector` names and types `text` into it.
    pub async fn type_into(&mut self, selector: &str, text: &str) {
        let quoted = serde_json::to_string(selector).expect("a string");
        let focused = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({quoted}); e.focus(); \
                 return document.activeElement === e; }})()"
            ))
            .await;
        assert_eq!(focused, json!(true), "{selector} takes the focus");
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    /// A PNG of the tab, written to `target/e2e-screenshots/NAME.png` (never into the sources);
    /// returns the file and its bytes.
    pub async fn screenshot(&mut self, name: &str) -> (PathBuf, Vec<u8>) {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = STANDARD
            .decode(shot["data"].as_str().expect("base64 data"))
            .expect("valid base64");
        let dir = crate::binary::target_dir().join("e2e-screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshot dir");
        let file = dir.join(format!("{name}.png"));
        std::fs::write(&file, &png).expect("the screenshot is written");
        (file, png)
    }

    /// Closes Chromium and waits (bounded) for it to exit.
    pub async fn close(mut self) {
        // No answer is awaited: Chromium may close the socket before it sends one.
        let close = json!({ "id": 0, "method": "Browser.close" }).to_string();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.socket.send(Message::text(close)),
        )
        .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// `ws://127.0.0.1:PORT/devtools/browser/ID` from the file Chromium writes once it listens.
async fn devtools_endpoint(file: &std::path::Path) -> String {
    let deadline = Instant::now() + START;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let [port, path] = text.lines().collect::<Vec<_>>()[..] {
            return format!("ws://127.0.0.1:{port}{path}");
        }
        assert!(
            Instant::now() < deadline,
            "Chromium named no DevTools port within {START:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
