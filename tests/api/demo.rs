//! The README's demo command: the real binary, its printed curl line, a complete dossier.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_demo_prints_a_curl_line_that_returns_a_complete_dossier() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ketenportaal"))
        .args(["demo", "--listen", "127.0.0.1:0", "--store"])
        .arg(dir.path().join("demo.sqlite"))
        .current_dir(crate::helpers::root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut curl = None;
    while curl.is_none() && started.elapsed() < Duration::from_secs(60) {
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1))
            && line.contains("/v1/me/dossier")
        {
            curl = Some(line);
        }
    }
    let curl = curl.expect("the demo printed a citizen curl line");
    // curl -s http://127.0.0.1:PORT/v1/me/dossier -H "Authorization: Bearer TOKEN"
    let url = curl
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap();
    let token = curl.split("Bearer ").nth(1).unwrap().trim_end_matches('"');
    let d: serde_json::Value = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["complete"], true, "{d}");
    let sources = d["sources"].as_array().unwrap();
    let orgs: std::collections::BTreeSet<&str> = sources
        .iter()
        .filter(|s| s["status"] == "ok")
        .map(|s| s["organisation"].as_str().unwrap())
        .collect();
    assert!(orgs.len() >= 3, "{orgs:?}");
    // Both SOAP (UWV, SVB) and REST (BRP, toeslagen) sources contributed records.
    let uitkeringen = d["sections"]["uitkeringen"].as_array().unwrap();
    assert!(
        uitkeringen
            .iter()
            .any(|u| u["_source"] == "uwv-uitkeringen")
    );
    assert!(
        d["sections"]["toeslagen"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["_source"] == "toeslagen")
    );
    assert_eq!(
        d["sections"]["persoon"]["_provenance"]["geslachtsnaam"],
        "brp-personen"
    );
}
