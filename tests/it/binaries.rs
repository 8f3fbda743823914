//! The binaries themselves: configuration errors, migrate, the worker's lifecycle.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{bin_path, db, free_port, test_redis_url};

#[test]
fn a_bad_setting_stops_the_process_naming_the_key() {
    let out = Command::new(bin_path("pillivery-api"))
        .arg("serve")
        .env("PILLIVERY__API__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("key `api.listen`"), "{stderr}");

    let out = Command::new(bin_path("pillivery-worker"))
        .env("PILLIVERY__WORKER__CONCURRENCY", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("worker.concurrency"), "{stderr}");

    let out = Command::new(bin_path("pillivery-api"))
        .arg("serve")
        .env("PILLIVERY__ENVIRONMENT", "production")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("auth.jwt_secret"), "{stderr}");
    assert!(!stderr.contains(billing::settings::DEV_JWT_SECRET));
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let url = db::fresh_database().await;
    for _ in 0..2 {
        let out = Command::new(bin_path("pillivery-api"))
            .arg("migrate")
            .env("PILLIVERY__DATABASE__URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Starts a workspace binary against a fresh database and waits for `health_path`.
async fn start_and_wait(
    name: &str,
    args: &[&str],
    listen_key: &str,
    health_path: &str,
) -> (Child, u16) {
    let url = db::fresh_database().await;
    let port = free_port();
    let child = Command::new(bin_path(name))
        .args(args)
        .env("PILLIVERY__DATABASE__URL", &url)
        .env("PILLIVERY__REDIS__URL", test_redis_url())
        .env(listen_key, format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = crate::helpers::http_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .get(format!("http://127.0.0.1:{port}{health_path}"))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => break,
            _ => {
                assert!(Instant::now() < deadline, "{name} never became healthy");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    (child, port)
}

async fn sigterm_and_expect_clean_exit(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn the_worker_serves_health_and_stops_cleanly_on_sigterm() {
    let (child, _) = start_and_wait(
        "pillivery-worker",
        &[],
        "PILLIVERY__WORKER__LISTEN",
        "/health/live",
    )
    .await;
    sigterm_and_expect_clean_exit(child).await;
}

#[tokio::test]
async fn the_api_binary_serves_until_sigterm_then_exits_cleanly() {
    let (child, port) = start_and_wait(
        "pillivery-api",
        &["serve"],
        "PILLIVERY__API__LISTEN",
        "/health/ready",
    )
    .await;
    let resp = crate::helpers::http_client()
        .get(format!("http://127.0.0.1:{port}/api-docs/openapi.json"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    sigterm_and_expect_clean_exit(child).await;
}
