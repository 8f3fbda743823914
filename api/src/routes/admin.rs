//! Operator routes (role `admin`).

use axum::extract::State;
use axum::Json;
use billing::page::{Page, PageRequest};
use billing::users::UserFilter;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{AdminUser, ApiPath, ApiQuery, OperatorUser};
use crate::routes::users::UserResponse;
use crate::AppState;
use axum::http::StatusCode;
use billing::audit::Actor;
use billing::db::MigrationReport;
use billing::jobs::{JobFilter, JobView, QueueStat};
use billing::users::AdminInput;

use crate::extract::ApiJson;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(list_jobs))
        .routes(routes!(retry_job))
        .routes(routes!(cancel_job))
        .routes(routes!(retry_failed_of_type))
        .routes(routes!(job_stats))
        .routes(routes!(migration_status, apply_migrations))
        .routes(routes!(create_admin))
        .routes(routes!(audit_log))
        .routes(routes!(set_user_access))
}

/// Change an account's role (`user`, `operator`: read-only, `admin`) and/or disable it
/// (it cannot log in; its sessions end at once) or enable it again. Audited; an admin
/// cannot change their own access.
#[utoipa::path(patch, path = "/api/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    request_body = billing::accounts::AccessPatch,
    responses(
        (status = 200, body = UserResponse),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden: not an admin"),
        (status = 404, body = ErrorBody, description = "not_found: no such active account"),
        (status = 409, body = ErrorBody, description = "cannot_change_own_access"),
        (status = 422, body = ErrorBody, description = "validation_failed (nothing to change, unknown role or field)"),
    ))]
async fn set_user_access(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<billing::accounts::AccessPatch>,
) -> ApiResult<Json<UserResponse>> {
    let user = billing::accounts::set_access(
        &state.ctx,
        &Actor::api(admin.0.user_id),
        billing::ids::UserId(id),
        patch,
    )
    .await?;
    Ok(Json(user.into()))
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Only actions on this kind of row (`job`, `item`, `webhook_endpoint`,
    /// `webhook_delivery`, `charge_attempt`, `user`).
    pub target_type: Option<String>,
    /// With `target_type`: only this row's.
    pub target_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<billing::audit::Entry>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

/// The audit log, newest first: every operator action (JSON admin routes, the console,
/// the operators' CLI) with who, when, on which row and what — written in the action's
/// own transaction.
#[utoipa::path(get, path = "/api/admin/audit", tag = "admin", security(("bearer" = [])),
    params(AuditFilter, PageRequest),
    responses(
        (status = 200, body = AuditPage),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden: not an admin"),
        (status = 422, body = ErrorBody, description = "validation_failed (page, size)"),
    ))]
async fn audit_log(
    State(state): State<AppState>,
    _operator: OperatorUser,
    ApiQuery(filter): ApiQuery<AuditFilter>,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> ApiResult<Json<AuditPage>> {
    let p = billing::audit::list(
        &state.ctx,
        filter.target_type.as_deref(),
        filter.target_id.as_deref(),
        page,
    )
    .await?;
    Ok(Json(AuditPage {
        items: p.items,
        page: p.page,
        size: p.size,
        total: p.total,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct JobPage {
    pub items: Vec<JobView>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

/// Jobs by state (e.g. `?state=failed`), pool (`task_type`) and task name, most recently
/// updated first, with their errors.
#[utoipa::path(get, path = "/api/admin/jobs", tag = "admin", security(("bearer" = [])),
    params(JobFilter, PageRequest),
    responses(
        (status = 200, body = JobPage),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden: not an admin"),
        (status = 422, body = ErrorBody, description = "validation_failed (state, task_type, name, page, size)"),
    ))]
async fn list_jobs(
    State(state): State<AppState>,
    _operator: OperatorUser,
    ApiQuery(filter): ApiQuery<JobFilter>,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> ApiResult<Json<JobPage>> {
    let p = billing::jobs::list(&state.ctx, &filter, page).await?;
    Ok(Json(JobPage {
        items: p.items,
        page: p.page,
        size: p.size,
        total: p.total,
    }))
}

/// Re-queue a failed job to run now with a fresh retry budget.
#[utoipa::path(post, path = "/api/admin/jobs/{id}/retry", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = JobView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 409, body = ErrorBody, description = "already_exists: an identical unique job is queued"),
        (status = 422, body = ErrorBody, description = "validation_failed: the job is not failed"),
    ))]
async fn retry_job(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<JobView>> {
    let job = billing::jobs::retry_failed(&state.ctx, &Actor::api(admin.0.user_id), id).await?;
    tracing::info!(admin = %admin.0.user_id, job_id = %id, "job retried by admin");
    Ok(Json(job))
}

/// Cancel a waiting job (`new` or `retried`) whose task allows it — diagnostics only:
/// payment steps, charges, deliveries, periodic and order follow-up tasks answer 409, so
/// a cancel never strands a payment or a subscription. The job's row is removed; the
/// audit row keeps its task and arguments.
#[utoipa::path(post, path = "/api/admin/jobs/{id}/cancel", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = JobView, description = "the job as it was when canceled"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 409, body = ErrorBody, description = "job_not_cancelable"),
        (status = 422, body = ErrorBody, description = "validation_failed: the job is not waiting"),
    ))]
async fn cancel_job(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(
        billing::tasks::cancel(&state.ctx, &Actor::api(admin.0.user_id), id).await?,
    ))
}

#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryFailedRequest {
    /// The pool (`task_type`, e.g. `pg`, `webhook`, `common`) whose failed jobs run again.
    pub task_type: String,
}

/// Re-queue every failed job of a pool to run now with a fresh retry budget (one audit
/// row). A unique job whose payload is live again stays failed (`skipped`).
#[utoipa::path(post, path = "/api/admin/jobs/retry-failed", tag = "admin", security(("bearer" = [])),
    request_body = RetryFailedRequest,
    responses(
        (status = 200, body = billing::jobs::RetriedFailed),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "validation_failed (task_type)"),
    ))]
async fn retry_failed_of_type(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiJson(req): ApiJson<RetryFailedRequest>,
) -> ApiResult<Json<billing::jobs::RetriedFailed>> {
    Ok(Json(
        billing::jobs::retry_failed_of_type(
            &state.ctx,
            &Actor::api(admin.0.user_id),
            &req.task_type,
        )
        .await?,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserResponse>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

impl From<Page<billing::users::User>> for UserPage {
    fn from(p: Page<billing::users::User>) -> Self {
        let p = p.map(UserResponse::from);
        Self {
            items: p.items,
            page: p.page,
            size: p.size,
            total: p.total,
        }
    }
}

/// Search accounts.
#[utoipa::path(get, path = "/api/admin/users", tag = "admin", security(("bearer" = [])),
    params(UserFilter, PageRequest),
    responses(
        (status = 200, body = UserPage),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden: not an admin"),
        (status = 422, body = ErrorBody, description = "validation_failed (page, size)"),
    ))]
async fn list_users(
    State(state): State<AppState>,
    _operator: OperatorUser,
    ApiQuery(filter): ApiQuery<UserFilter>,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> ApiResult<Json<UserPage>> {
    let users = billing::users::list(&state.ctx, filter, page).await?;
    Ok(Json(users.into()))
}

#[derive(Serialize, ToSchema)]
pub struct QueueStats {
    pub items: Vec<QueueStat>,
}

/// The job queue per task type and state, with how long the oldest due job has waited
/// (`lag_seconds`): what `pillivery-worker jobs stats` prints.
#[utoipa::path(get, path = "/api/admin/jobs/stats", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, body = QueueStats),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden: not an admin"),
    ))]
async fn job_stats(
    State(state): State<AppState>,
    _operator: OperatorUser,
) -> ApiResult<Json<QueueStats>> {
    let items = billing::jobs::stats(&state.ctx).await?;
    Ok(Json(QueueStats { items }))
}

/// This binary's migrations against the database: applied, pending, or diverged
/// (`modified`, `failed`, `unknown`).
#[utoipa::path(get, path = "/api/admin/migrations", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, body = MigrationReport),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden: not an admin"),
    ))]
async fn migration_status(
    State(state): State<AppState>,
    _operator: OperatorUser,
) -> ApiResult<Json<MigrationReport>> {
    Ok(Json(
        billing::db::migration_status(state.ctx.db.pool()).await?,
    ))
}

/// Apply the pending migrations (what `pillivery-api migrate` does; concurrent callers take
/// turns under sqlx's advisory lock). Refuses with 409, changing nothing, when the database
/// has diverged from this binary's migrations.
#[utoipa::path(post, path = "/api/admin/migrations", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, body = MigrationReport),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden: not an admin"),
        (status = 409, body = ErrorBody, description = "migrations_diverged"),
    ))]
async fn apply_migrations(
    State(state): State<AppState>,
    admin: AdminUser,
) -> ApiResult<Json<MigrationReport>> {
    let report = billing::db::apply_migrations_as(&state.ctx, &Actor::api(admin.0.user_id)).await?;
    tracing::info!(admin = %admin.0.user_id, "migrations applied by admin");
    Ok(Json(report))
}

/// Create an admin account, or make the active account with that e-mail an admin (its
/// password unchanged): 201 when created, 200 when promoted.
#[utoipa::path(post, path = "/api/admin/admins", tag = "admin", security(("bearer" = [])),
    request_body = AdminInput,
    responses(
        (status = 201, body = UserResponse, description = "created"),
        (status = 200, body = UserResponse, description = "an existing account promoted"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden: not an admin"),
        (status = 409, body = ErrorBody, description = "already_exists (e.g. the phone number)"),
        (status = 422, body = ErrorBody, description = "validation_failed"),
    ))]
async fn create_admin(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiJson(input): ApiJson<AdminInput>,
) -> ApiResult<(StatusCode, Json<UserResponse>)> {
    let (user, created) =
        billing::users::create_admin(&state.ctx, &Actor::api(admin.0.user_id), input).await?;
    tracing::info!(admin = %admin.0.user_id, user_id = %user.id, created, "admin granted");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(user.into())))
}
