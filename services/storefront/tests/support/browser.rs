//! Headless Chromium, driven through ChromeDriver (WebDriver), with a PNG screenshot of
//! every page visited under `target/browser-screenshots/<test>/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

pub struct Browser {
    pub client: Client,
    base: String,
    shots: PathBuf,
    taken: u32,
    _driver: tokio::process::Child,
}

fn binaries() -> (String, String) {
    let find = |var: &str, default: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.into())
    };
    let browser = find("CHROMIUM", "/usr/bin/chromium");
    let driver = find("CHROMEDRIVER", "/usr/bin/chromedriver");
    for path in [&browser, &driver] {
        assert!(
            std::path::Path::new(path).exists(),
            "{path} is missing: the browser suite needs Chromium and ChromeDriver. \
             Run scripts/chromium.sh (it installs them, or says how), or set CHROMIUM and \
             CHROMEDRIVER; `make test` does this for you"
        );
    }
    (browser, driver)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn screenshots_dir(test: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("browser-screenshots").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the screenshots folder");
    dir
}

impl Browser {
    /// A fresh headless Chromium (no cookies) for the shop at `base`; `test` names the
    /// folder of its screenshots.
    pub async fn start(base: &str, test: &str) -> Browser {
        let (browser, driver) = binaries();
        let port = free_port();
        let child = tokio::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1100,900",
                         "--no-first-run", "--password-store=basic"],
            }),
        );
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        base: base.trim_end_matches('/').to_string(),
                        shots: screenshots_dir(test),
                        taken: 0,
                        _driver: child,
                    };
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("no WebDriver session from {driver}: {last:?}");
    }

    /// Saves a screenshot of the page as it is now.
    pub async fn shot(&mut self, name: &str) {
        self.taken += 1;
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = self.shots.join(format!("{:02}-{name}.png", self.taken));
        std::fs::write(&path, png).expect("the screenshot is written");
    }

    /// Opens a page of the shop (`/shop/cart`) and screenshots it.
    pub async fn open(&mut self, path: &str, name: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("the page opens");
        self.shot(name).await;
    }

    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    pub async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    /// Replaces what an input holds.
    pub async fn fill(&self, css: &str, value: &str) {
        let input = self.find(css).await;
        input.clear().await.expect("cleared");
        input.send_keys(value).await.expect("typed");
    }

    /// Clicks, waits for the page it leads to, and screenshots that page.
    pub async fn click(&mut self, css: &str, name: &str) {
        let before = self.client.current_url().await.ok();
        let old_body = self.client.find(Locator::Css("body")).await.ok();
        self.find(css).await.click().await.expect("clicked");
        // A form post or link loads a new document: wait until the old body is gone.
        if let Some(body) = old_body {
            for _ in 0..100 {
                if body.tag_name().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = before;
        self.find("body").await;
        self.shot(name).await;
    }

    /// The text of the whole page.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.path().to_string())
            .unwrap_or_default()
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
