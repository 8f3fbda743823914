//! Password hashing with argon2, off the async threads (it is deliberately slow).

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// At most this many argon2 computations at once per process. Each takes 19 MiB and a
/// core for tens of milliseconds; unbounded, a burst of logins (from many IPs, so past
/// the per-IP limit) grew the API to gigabytes that the allocator kept. More than the
/// cores would only queue inside the OS instead of here.
fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Semaphore::new(cores)
    })
}

async fn bounded<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let _permit = permits()
        .acquire()
        .await
        .map_err(|e| Error::Internal(format!("argon2 permits: {e}")))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("argon2 task: {e}")))?
}

pub async fn hash(password: String) -> Result<String> {
    bounded(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(format!("argon2: {e}")))
    })
    .await
}

pub async fn verify(password: String, stored: String) -> Result<bool> {
    bounded(move || {
        let parsed =
            PasswordHash::new(&stored).map_err(|e| Error::Internal(format!("stored hash: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
}

/// Spends the same work as a real check when the account does not exist, so response
/// time does not tell which e-mails are registered.
pub async fn verify_dummy(password: String) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let stored = DUMMY
        .get_or_init(|| {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(b"dummy password 1!", &salt)
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
        .clone();
    let _ = verify(password, stored).await;
}
