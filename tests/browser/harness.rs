//! Headless Chromium driven over WebDriver (chromedriver + fantoccini), with an axe-core
//! accessibility check and screenshots kept as test artefacts.
//!
//! Needs `/usr/bin/chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`) and axe-core (`npm ci --prefix tests/browser`). Without them the tests say
//! so and pass, unless `KETENPORTAAL_BROWSER_TESTS=required` (as `.ci/run` sets): then a missing
//! piece fails the test.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    base: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver runs in its own process group with the Chromium it started; the whole
        // group goes, or every test run would leave its browsers behind (they outlive a killed
        // chromedriver).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where screenshots and accessibility reports go (`KETENPORTAAL_ARTIFACTS`, else
/// `target/browser-artifacts`).
pub fn artifacts() -> PathBuf {
    let dir = std::env::var_os("KETENPORTAAL_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/browser-artifacts"));
    std::fs::create_dir_all(&dir).expect("artifacts folder");
    dir
}

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        let p = Path::new(n);
        if p.is_absolute() {
            return p.is_file().then(|| p.to_path_buf());
        }
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|c| c.is_file())
    })
}

fn axe_path() -> PathBuf {
    root().join("tests/browser/node_modules/axe-core/axe.min.js")
}

/// Starts chromedriver and a fresh headless Chromium, or `None` (with the reason printed) when
/// they are not installed and the tests are not required.
pub async fn start(base: &str) -> Option<Browser> {
    let required = std::env::var("KETENPORTAAL_BROWSER_TESTS").as_deref() == Ok("required");
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| which(&["/usr/bin/chromium", "chromium", "chromium-browser"]));
    let driver = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| which(&["/usr/bin/chromedriver", "chromedriver"]));
    let missing: Vec<&str> = [
        ("chromium", chromium.is_some()),
        ("chromedriver", driver.is_some()),
        (
            "axe-core (npm ci --prefix tests/browser)",
            axe_path().is_file(),
        ),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(n, _)| n)
    .collect();
    if !missing.is_empty() {
        let msg = format!(
            "browser test skipped: missing {}; install with `apt-get install chromium chromium-driver` and `npm ci --prefix tests/browser`",
            missing.join(", ")
        );
        assert!(!required, "{msg} (KETENPORTAAL_BROWSER_TESTS=required)");
        eprintln!("{msg}");
        return None;
    }
    let (chromium, driver) = (chromium?, driver?);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("profile dir");
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--lang=nl-NL", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }
    });
    let caps = match caps {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        match ClientBuilder::rustls()
            .expect("rustls client")
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session from {}: {e}", driver.display()),
        }
    };
    Some(Browser {
        client,
        driver: child,
        _profile: profile,
        base: base.to_string(),
    })
}

impl Browser {
    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("goto {path}: {e}"));
    }

    /// Runs `script` (a function body; `arguments[0..]` are `args`) and answers its result.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `expr` (a JS expression) is truthy; answers its value.
    pub async fn wait_until(&self, expr: &str, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let script = format!("try {{ return ({expr}) || null; }} catch (e) {{ return null; }}");
        loop {
            let v = self.js(&script, vec![]).await;
            if !v.is_null() && v != json!(false) {
                return v;
            }
            if Instant::now() > deadline {
                let body = self.js("return document.body.innerText", vec![]).await;
                panic!("timed out waiting for {what} (`{expr}`); the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the element matching `css` exists and contains `needle`; answers its text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let expr = format!(
            "(() => {{ const e = document.querySelector({css}); return e && e.innerText.includes({needle}) ? e.innerText : null; }})()",
            css = json!(css),
            needle = json!(needle),
        );
        self.wait_until(&expr, &format!("{css} to contain {needle:?}"))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn click(&self, css: &str) {
        let e = self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        e.click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        e.clear().await.ok();
        e.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    pub async fn select(&self, css: &str, value: &str) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        e.select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("selecting {value} in {css}: {e}"));
    }

    /// Presses Tab in the focused element (the page itself when nothing has focus).
    pub async fn tab(&self) {
        let e = self
            .client
            .active_element()
            .await
            .expect("an active element");
        e.send_keys("\u{E004}").await.expect("Tab");
    }

    /// Signs in through the demo sign-in page as `account`.
    pub async fn sign_in(&self, account: &str) {
        self.goto("/portaal/aanmelden.html").await;
        self.click(&format!("button[data-account=\"{account}\"]"))
            .await;
        self.wait_until(
            "!location.pathname.endsWith('aanmelden.html') && document.readyState === 'complete'",
            "the sign-in to land on a portal page",
        )
        .await;
    }

    /// A full-page screenshot at desktop width and one at phone width (390 px); checks that the
    /// phone layout needs no sideways scrolling and that no label (`dt`, `th`, `label`,
    /// headings) is broken in the middle of a word ("Ingangsda / tum").
    pub async fn screenshots(&self, name: &str) -> PathBuf {
        let dir = artifacts();
        let mut first = PathBuf::new();
        for (suffix, width) in [("", 1280u32), ("-telefoon", 390)] {
            self.client.set_window_size(width, 900).await.ok();
            tokio::time::sleep(Duration::from_millis(150)).await;
            let height = self
                .js("return document.documentElement.scrollHeight", vec![])
                .await
                .as_u64()
                .unwrap_or(900)
                .clamp(600, 6000) as u32;
            self.client.set_window_size(width, height + 140).await.ok();
            tokio::time::sleep(Duration::from_millis(150)).await;
            if width < 500 {
                let overflow = self
                    .js(
                        "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                        vec![],
                    )
                    .await;
                assert!(
                    overflow.as_i64().unwrap_or(0) <= 0,
                    "{name}: the page scrolls sideways on a phone ({overflow} px too wide)"
                );
            }
            let broken = self.js(BROKEN_WORDS, vec![]).await;
            assert_eq!(
                broken,
                json!([]),
                "{name} at {width} px: labels broken in the middle of a word"
            );
            let png = self.client.screenshot().await.expect("screenshot");
            let path = dir.join(format!("{name}{suffix}.png"));
            std::fs::write(&path, png).expect("write screenshot");
            if first.as_os_str().is_empty() {
                first = path;
            }
        }
        self.client.set_window_size(1280, 1000).await.ok();
        first
    }

    /// Runs axe-core (WCAG 2.1 A and AA rules, and its best practices) on the current page,
    /// writes the report next to the screenshots, and fails on any violation.
    pub async fn axe(&self, name: &str) {
        let src = std::fs::read_to_string(axe_path()).expect("axe-core");
        if self
            .js("return typeof window.axe === 'undefined'", vec![])
            .await
            == json!(true)
        {
            self.js(&src, vec![]).await;
        }
        let report = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})
                   .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                       nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ': ' + n.failureSummary)}))))
                   .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));",
                vec![],
            )
            .await
            .expect("axe ran");
        std::fs::write(
            artifacts().join(format!("{name}-axe.json")),
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
        .ok();
        let list = report.as_array().cloned().unwrap_or_default();
        // Every violation fails, whatever its impact: the pages are at zero and stay there.
        assert!(
            list.is_empty(),
            "{name}: accessibility violations:\n{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
    }
}

/// Words of labels that the layout splits over two lines: a word whose range has more than one
/// line box. Returns `["word (element text)", ...]`.
const BROKEN_WORDS: &str = r#"
const out = [];
for (const el of document.querySelectorAll('dl dt, th, label, legend, h1, h2, h3, .card .label')) {
  if (!el.offsetParent) continue;
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const re = /[^\s\-\/]+/g;
    let m;
    while ((m = re.exec(n.data)) !== null) {
      const r = document.createRange();
      r.setStart(n, m.index);
      r.setEnd(n, m.index + m[0].length);
      const tops = new Set(Array.from(r.getClientRects()).map(b => Math.round(b.top)));
      if (tops.size > 1) out.push(m[0] + ' (' + el.textContent.trim().slice(0, 40) + ')');
    }
  }
}
return out;
"#;
