//! The billing crate's one error type: what went wrong, in terms callers can act on.

use serde::Serialize;

/// One rejected input field, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// An external dependency the request needed and could not reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Postgres,
    Redis,
    OAuthProvider,
}

impl Dependency {
    pub fn name(self) -> &'static str {
        match self {
            Dependency::Postgres => "postgres",
            Dependency::Redis => "redis",
            Dependency::OAuthProvider => "oauth_provider",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// Text with a control character (a NUL byte, an escape sequence…), refused before
    /// any query.
    #[error("control characters are not allowed")]
    InvalidCharacters(Vec<FieldError>),
    #[error("already exists")]
    AlreadyExists(Vec<FieldError>),
    #[error("not found")]
    NotFound,
    #[error("the item is not on sale")]
    ItemUnavailable,
    #[error("only a customer with a paid order of this item may review it")]
    NotPurchased,
    #[error("you already have a review of this item; edit it instead")]
    AlreadyReviewed,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("the payment is being approved; try again in a moment")]
    PaymentInProgress,
    #[error("the order is already canceled")]
    AlreadyCanceled,
    #[error("the order is already refunded or being refunded")]
    AlreadyRefunded,
    #[error("the order's payment failed; there is nothing to cancel")]
    OrderNotCancelable,
    #[error("the order is not paid; there is nothing to refund")]
    OrderNotPaid,
    #[error("the subscription is canceled")]
    SubscriptionCanceled,
    #[error("only an active subscription can do that (this one is paused or in payment retries)")]
    SubscriptionNotActive,
    #[error("the subscription is not paused")]
    SubscriptionNotPaused,
    #[error("a charge of this subscription is being processed; try again shortly")]
    ChargeInProgress,
    #[error("a subscription keeps at least one product; cancel it instead")]
    LastProduct,
    #[error("the subscription has nothing to pay: it is active or paused")]
    NothingToRecover,
    #[error("this recovery link was used, has expired, or its subscription was paid")]
    RecoveryLinkGone,
    /// Boxed: the PG's error is large and every `Result` here would carry its size.
    #[error(transparent)]
    Gateway(Box<crate::pg_error::GatewayError>),
    #[error("invalid e-mail or password")]
    InvalidCredentials,
    #[error("this account has been withdrawn")]
    AccountWithdrawn,
    #[error("this account has been disabled by the store")]
    AccountDisabled,
    #[error("an operator cannot change their own role or disable their own account")]
    CannotChangeOwnAccess,
    /// A waiting job of a kind other work waits on (`tasks::cancel_policy`).
    #[error("`{name}` jobs cannot be canceled: {reason}")]
    JobNotCancelable { name: String, reason: &'static str },
    #[error("only admins and operators can use the operator console")]
    ConsoleNotAllowed,
    #[error("access token missing, invalid, expired or revoked")]
    InvalidToken,
    #[error("refresh token invalid, expired or revoked")]
    InvalidRefreshToken,
    #[error("refresh token was already used; its session has been revoked")]
    RefreshTokenReused,
    #[error("invalid or expired OAuth state")]
    InvalidOAuthState,
    #[error("invalid or expired signup token")]
    InvalidSignupToken,
    #[error("unknown OAuth provider")]
    UnknownOAuthProvider,
    #[error("the e-mail belongs to an existing account; log in with its password")]
    EmailRegisteredElsewhere,
    #[error("OAuth provider error: {0}")]
    OAuthProvider(String),
    #[error("{} unavailable: {detail}", .dependency.name())]
    Unavailable {
        dependency: Dependency,
        detail: String,
    },
    /// The database's applied migrations are not a prefix of this binary's (a newer binary
    /// migrated it, or an applied migration was edited): migrating here would be unsafe.
    #[error("migrations diverged: {0}")]
    MigrationsDiverged(String),
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<crate::pg_error::GatewayError> for Error {
    fn from(e: crate::pg_error::GatewayError) -> Self {
        Error::Gateway(Box::new(e))
    }
}

impl Error {
    pub fn validation(field: &str, reason: &str) -> Self {
        Error::Validation(vec![FieldError::new(field, reason)])
    }

    pub fn redis(err: impl std::fmt::Display) -> Self {
        Error::Unavailable {
            dependency: Dependency::Redis,
            detail: err.to_string(),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            // Pool exhaustion and lost connections are the database being unavailable,
            // which callers answer with 503, not a bug.
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => Error::Unavailable {
                dependency: Dependency::Postgres,
                detail: err.to_string(),
            },
            // Connection exceptions (08), too many connections (53), the server shutting
            // down or restarting (57), a database closed to connections: all transient.
            sqlx::Error::Database(db) if is_unavailable(db.as_ref()) => Error::Unavailable {
                dependency: Dependency::Postgres,
                detail: err.to_string(),
            },
            _ => Error::Database(err),
        }
    }
}

fn is_unavailable(db: &dyn sqlx::error::DatabaseError) -> bool {
    let code = db.code().unwrap_or_default();
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || (code == "55000" && db.message().contains("accepting connections"))
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The name of the unique index or constraint a statement violated, if that was the failure.
pub fn unique_violation(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => db.constraint(),
        _ => None,
    }
}
