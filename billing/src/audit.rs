//! The audit log: who did which operator action, when, on which row — recorded on the
//! action's own transaction (so the row and the action commit or roll back together), and
//! read back for operators.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::error::Result;
use crate::ids::UserId;
use crate::page::{Page, PageRequest};
use crate::Ctx;

/// Where an action came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Channel {
    /// A JSON admin route.
    Api,
    /// The operator console.
    Console,
    /// An operators' command (`pillivery-worker jobs retry …`, `pillivery-api create-admin`).
    Cli,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Console => "console",
            Self::Cli => "cli",
        }
    }
}

/// Who acts: an authenticated operator, or the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub user: Option<UserId>,
    pub channel: Channel,
}

impl Actor {
    pub fn api(user: UserId) -> Self {
        Self {
            user: Some(user),
            channel: Channel::Api,
        }
    }

    pub fn console(user: UserId) -> Self {
        Self {
            user: Some(user),
            channel: Channel::Console,
        }
    }

    pub fn cli() -> Self {
        Self {
            user: None,
            channel: Channel::Cli,
        }
    }
}

/// Every operator action the log knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    JobRetried,
    ChargeReconcileRequested,
    WebhookEndpointCreated,
    WebhookEndpointUpdated,
    WebhookEndpointDeleted,
    WebhookSecretRotated,
    DeliveryRedelivered,
    DeadDeliveriesRedelivered,
    ItemCreated,
    ItemUpdated,
    ItemDeleted,
    ItemsImported,
    AdminGranted,
    UserRoleChanged,
    UserDisabled,
    UserEnabled,
    SubscriptionSkipped,
    SubscriptionPaused,
    SubscriptionResumed,
    SubscriptionCanceled,
    SubscriptionPeriodChanged,
    OrderRefundRequested,
    FailedJobsRetried,
    JobCanceled,
    MigrationsApplied,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobRetried => "job_retried",
            Self::ChargeReconcileRequested => "charge_reconcile_requested",
            Self::WebhookEndpointCreated => "webhook_endpoint_created",
            Self::WebhookEndpointUpdated => "webhook_endpoint_updated",
            Self::WebhookEndpointDeleted => "webhook_endpoint_deleted",
            Self::WebhookSecretRotated => "webhook_secret_rotated",
            Self::DeliveryRedelivered => "delivery_redelivered",
            Self::DeadDeliveriesRedelivered => "dead_deliveries_redelivered",
            Self::ItemCreated => "item_created",
            Self::ItemUpdated => "item_updated",
            Self::ItemDeleted => "item_deleted",
            Self::ItemsImported => "items_imported",
            Self::AdminGranted => "admin_granted",
            Self::UserRoleChanged => "user_role_changed",
            Self::UserDisabled => "user_disabled",
            Self::UserEnabled => "user_enabled",
            Self::SubscriptionSkipped => "subscription_skipped",
            Self::SubscriptionPaused => "subscription_paused",
            Self::SubscriptionResumed => "subscription_resumed",
            Self::SubscriptionCanceled => "subscription_canceled",
            Self::SubscriptionPeriodChanged => "subscription_period_changed",
            Self::OrderRefundRequested => "order_refund_requested",
            Self::FailedJobsRetried => "failed_jobs_retried",
            Self::JobCanceled => "job_canceled",
            Self::MigrationsApplied => "migrations_applied",
        }
    }
}

/// The row an action was taken on: its kind and id (none for an action on many rows).
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub kind: &'a str,
    pub id: Option<String>,
}

impl<'a> Target<'a> {
    pub fn row(kind: &'a str, id: &dyn std::fmt::Display) -> Self {
        Self {
            kind,
            id: Some(id.to_string()),
        }
    }

    pub fn many(kind: &'a str) -> Self {
        Self { kind, id: None }
    }
}

/// Writes the action's row on the caller's transaction, with the request id when there
/// is one.
pub async fn record(
    conn: &mut PgConnection,
    actor: &Actor,
    action: Action,
    target: Target<'_>,
    details: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO audit_log (actor_user_id, channel, action, target_type, target_id, details,
                                request_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        actor.user.map(|u| u.0),
        actor.channel as Channel,
        action.as_str(),
        target.kind,
        target.id,
        details,
        crate::telemetry::current_request_id(),
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One entry as operators read it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Entry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_user_id: Option<i64>,
    pub actor_email: Option<String>,
    pub channel: Channel,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub details: serde_json::Value,
    pub request_id: Option<String>,
}

/// The log, newest first, optionally of one target (`target_type`, and `target_id`).
pub async fn list(
    ctx: &Ctx,
    target_type: Option<&str>,
    target_id: Option<&str>,
    page: PageRequest,
) -> Result<Page<Entry>> {
    let page = page.validate()?;
    // The target index leads with the type; an id alone would read the whole log.
    if target_id.is_some() && target_type.is_none() {
        return Err(crate::Error::validation(
            "target_type",
            "required with target_id",
        ));
    }
    let mut conn = ctx.db.acquire().await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log
           WHERE ($1::text IS NULL OR target_type = $1) AND ($2::text IS NULL OR target_id = $2)"#,
        target_type,
        target_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let items = sqlx::query_as!(
        Entry,
        r#"SELECT a.id, a.created_at AS at, a.actor_user_id, u.email AS "actor_email?",
                  a.channel AS "channel: Channel", a.action, a.target_type, a.target_id,
                  a.details, a.request_id
           FROM audit_log a LEFT JOIN users u ON u.id = a.actor_user_id
           WHERE ($1::text IS NULL OR a.target_type = $1) AND ($2::text IS NULL OR a.target_id = $2)
           ORDER BY a.created_at DESC, a.id DESC LIMIT $3 OFFSET $4"#,
        target_type,
        target_id,
        page.limit(),
        page.offset()
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Page::new(items, page, total))
}
