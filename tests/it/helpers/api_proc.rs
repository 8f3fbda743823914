//! Long-running child binaries (the real `pillivery-api`, `pillivery-pgsim`) with their
//! output in a temp file, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{bin_path, free_port, http_client, test_redis_url};

/// A spawned binary whose stdout and stderr go to a log file.
pub struct ChildProcess {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl ChildProcess {
    /// Spawns `bin` (a workspace binary) with `args`; `configure` adds env vars first.
    pub fn spawn(bin: &str, args: &[&str], configure: impl FnOnce(&mut Command)) -> Self {
        let log =
            std::env::temp_dir().join(format!("pv-{bin}-{}.log", uuid::Uuid::new_v4().simple()));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin_path(bin));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        configure(&mut cmd);
        ChildProcess {
            name: bin.to_owned(),
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits until `GET url` answers 2xx, failing with the logs if the process exits.
    pub async fn wait_ok(&mut self, url: &str, within: Duration) {
        let client = http_client();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = client.get(url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(self.is_running(), "{} exited:\n{}", self.name, self.logs());
            assert!(
                Instant::now() < deadline,
                "{} never answered {url}:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The real `pillivery-api serve` on a free port of its own.
pub struct ApiProcess {
    pub process: ChildProcess,
    /// `http://127.0.0.1:<port>`: also its `api.public_url`.
    pub base: String,
}

impl ApiProcess {
    /// Starts the API on `database_url` with generous rate limits; `env` adds settings.
    pub fn spawn(database_url: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let process = ChildProcess::spawn("pillivery-api", &["serve"], |cmd| {
            cmd.env("PILLIVERY__ENVIRONMENT", "test")
                .env("PILLIVERY__DATABASE__URL", database_url)
                .env("PILLIVERY__REDIS__URL", test_redis_url())
                .env("PILLIVERY__API__LISTEN", format!("127.0.0.1:{port}"))
                .env("PILLIVERY__API__PUBLIC_URL", &base)
                .env("PILLIVERY__RATE_LIMIT__PER_IP_PER_SEC", "10000")
                .env("PILLIVERY__RATE_LIMIT__PER_IP_BURST", "10000")
                .env("PILLIVERY__RATE_LIMIT__LOGIN_PER_MIN", "10000")
                .env("PILLIVERY__RATE_LIMIT__LOGIN_BURST", "10000")
                .env("PILLIVERY__RATE_LIMIT__PER_ACCOUNT_PER_MIN", "10000")
                .env("PILLIVERY__RATE_LIMIT__PER_ACCOUNT_BURST", "10000")
                .env("PILLIVERY__LOG__LEVEL", "info")
                // test receivers listen on 127.0.0.1; `env` may turn it off again
                .env("PILLIVERY__WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS", "true");
            for (k, v) in env {
                cmd.env(k, v);
            }
        });
        ApiProcess { process, base }
    }

    /// Waits until `/health/ready` answers 200 (Postgres and Redis reachable).
    pub async fn wait_ready(&mut self) {
        let url = format!("{}/health/ready", self.base);
        self.process.wait_ok(&url, Duration::from_secs(20)).await;
    }

    pub fn logs(&self) -> String {
        self.process.logs()
    }
}
