//! The dashboard in a real headless browser (Debian's `chromium`): the real binary serves it,
//! two tenants send scripted traffic, and the numbers the page shows for them are checked in the
//! DOM chromium renders. With `CI=true` a missing chromium fails the test instead of skipping it.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::Binary;

const TOKEN: &str = "browser-test-token";

fn chromium() -> Option<PathBuf> {
    let candidates = ["chromium", "chromium-browser", "google-chrome"];
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for c in candidates {
            let p = dir.join(c);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The DOM chromium renders for `url` once the page has polled the API a few times.
fn dump_dom(browser: &PathBuf, url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = profile.path().join("dom.html");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=4000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(std::fs::File::create(&out).expect("dom file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            assert!(status.success(), "chromium failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(&out).expect("read dom")
}

/// The text of the first element after `from` carrying `data-field="<field>"`.
fn field<'a>(html: &'a str, from: usize, field: &str) -> &'a str {
    let marker = format!("data-field=\"{field}\"");
    let at = html[from..]
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} after offset {from}"))
        + from;
    let start = html[at..].find('>').expect("tag end") + at + 1;
    let end = html[start..].find('<').expect("text end") + start;
    &html[start..end]
}

fn row(html: &str, tenant: &str) -> usize {
    html.find(&format!("<tr data-tenant=\"{tenant}\""))
        .unwrap_or_else(|| panic!("the page shows no row for tenant {tenant}:\n{html}"))
}

async fn decide(client: &reqwest::Client, bin: &Binary, tenant: &str, key: &str, max: u64) {
    let body = format!(
        r#"{{"tenant_id":"{tenant}","client_id":"{key}","action_type":"read","max_requests":{max},"window_duration_seconds":600}}"#
    );
    let r = client
        .post(bin.url("/api/check_and_consume"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("decision");
    assert!(r.status() == 200 || r.status() == 429, "{}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_both_tenants_figures_in_a_real_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed (apt-get install -y chromium); CI=true forbids skipping"
        );
        eprintln!("skipping: chromium is not installed");
        return;
    };
    let bin = Binary::start(&["--admin-token", TOKEN]).await;
    let client = reqwest::Client::new();
    // acme: 12 calls on one key limited to 9 -> 9 allowed, 3 denied.
    for _ in 0..12 {
        decide(&client, &bin, "acme", "hammer", 9).await;
    }
    // globex: 5 calls over 5 keys -> 5 allowed.
    for i in 0..5 {
        decide(&client, &bin, "globex", &format!("user{i}"), 100).await;
    }

    let url = bin.url(&format!("/dashboard#token={TOKEN}"));
    let dom = tokio::task::spawn_blocking(move || dump_dom(&browser, &url))
        .await
        .expect("browser task");
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never loaded /api/stats:\n{dom}"
    );
    let acme = row(&dom, "acme");
    assert_eq!(field(&dom, acme, "allowed"), "9");
    assert_eq!(field(&dom, acme, "denied"), "3");
    assert_eq!(field(&dom, acme, "denied_share"), "25.0%");
    assert_eq!(field(&dom, acme, "weight"), "1");
    let globex = row(&dom, "globex");
    assert_eq!(field(&dom, globex, "allowed"), "5");
    assert_eq!(field(&dom, globex, "denied"), "0");
    assert_eq!(field(&dom, globex, "denied_share"), "0.0%");
    // The heavy hitter: acme's one key, with its limit.
    let key = dom
        .find("data-key=\"acme/hammer/read\"")
        .unwrap_or_else(|| panic!("no heavy-hitter row for acme/hammer/read:\n{dom}"));
    assert_eq!(field(&dom, key, "count"), "12");
    assert!(dom[key..].contains("9 / 600 s"));
    // The token was taken out of the address and nothing asked for it.
    assert!(dom.contains("<form id=\"login\" class=\"login\" hidden"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_asks_for_the_token_when_it_is_missing_or_wrong() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed (apt-get install -y chromium); CI=true forbids skipping"
        );
        eprintln!("skipping: chromium is not installed");
        return;
    };
    let bin = Binary::start(&["--admin-token", TOKEN]).await;
    let url = bin.url("/dashboard#token=wrong");
    let dom = tokio::task::spawn_blocking(move || dump_dom(&browser, &url))
        .await
        .expect("browser task");
    assert!(
        dom.contains("<form id=\"login\" class=\"login\">"),
        "the login form is not shown:\n{dom}"
    );
    assert!(dom.contains("that token was refused"));
    assert!(!dom.contains("data-loaded=\"true\""));
}
