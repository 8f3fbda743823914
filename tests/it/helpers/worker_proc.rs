//! The real `pillivery-worker` binary, started against a test database.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{bin_path, free_port, http_client, test_redis_url};

pub struct WorkerProcess {
    child: Child,
    pub port: u16,
    pub log: std::path::PathBuf,
}

impl WorkerProcess {
    /// The worker's `/metrics` page (Prometheus text).
    pub async fn metrics(&self) -> String {
        crate::helpers::http_client()
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Starts a worker; `env` overrides settings (e.g. `PILLIVERY__WORKER__LEASE_MS`).
    pub fn spawn(database_url: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("pv-worker-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin_path("pillivery-worker"));
        cmd.env("PILLIVERY__DATABASE__URL", database_url)
            .env("PILLIVERY__REDIS__URL", test_redis_url())
            .env("PILLIVERY__WORKER__LISTEN", format!("127.0.0.1:{port}"))
            .env("PILLIVERY__LOG__LEVEL", "info")
            // test receivers listen on 127.0.0.1; `env` may turn it off again
            .env("PILLIVERY__WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS", "true")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        for (k, v) in env {
            cmd.env(k, v);
        }
        WorkerProcess {
            child: cmd.spawn().unwrap(),
            port,
            log,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_live(&mut self) {
        let client = http_client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client
                .get(format!("http://127.0.0.1:{}/health/live", self.port))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(self.is_running(), "worker exited:\n{}", self.logs());
            assert!(Instant::now() < deadline, "worker never became live");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not exit:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
