//! Account use cases that span the user row and its sessions: withdrawal (sessions end
//! with the account, in one transaction) and profile edits (a password change ends the
//! other sessions). Above `users` (rows, profile) and `sessions` (tokens), so neither
//! imports the other's caller.

use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::sessions::Principal;
use crate::store::sessions::RevokeReason;
use crate::users::{ProfilePatch, Role, User};
use crate::{sessions, Ctx};

/// Withdraws the account and ends every session of it in one transaction: a login racing
/// it either opened its session first (then revoked here) or finds the account withdrawn.
pub async fn withdraw(ctx: &Ctx, id: UserId) -> Result<()> {
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    if !crate::users::mark_withdrawn(&mut tx, id, now).await? {
        return Err(Error::NotFound);
    }
    let ended = sessions::revoke_all(&mut tx, id, None, RevokeReason::Withdrawn, now).await?;
    tx.commit().await?;
    tracing::info!(user_id = %id, sessions = ended, "account withdrawn");
    Ok(())
}

/// `PATCH /api/users/me`. A new password ends every other session of the account in the
/// same transaction (the one that changed it stays signed in).
pub async fn update_profile(ctx: &Ctx, principal: &Principal, patch: ProfilePatch) -> Result<User> {
    let changes_password = patch.password.is_some();
    let mut tx = ctx.db.begin().await?;
    let user = crate::users::update_profile(&mut tx, principal.user_id, patch).await?;
    if changes_password {
        let ended = sessions::revoke_all(
            &mut tx,
            principal.user_id,
            Some(principal.session),
            RevokeReason::PasswordChanged,
            ctx.clock.now(),
        )
        .await?;
        tracing::info!(user_id = %principal.user_id, sessions = ended, "password changed; other sessions ended");
    }
    tx.commit().await?;
    Ok(user)
}

/// `PATCH /api/admin/users/{id}`: an admin's change of someone's access.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessPatch {
    /// `user`, `operator` (read-only console and admin routes) or `admin`.
    pub role: Option<Role>,
    /// True disables the account (it cannot log in; its sessions end at once); false
    /// enables it again.
    pub disabled: Option<bool>,
}

/// Changes an active account's role and/or disables it, with the audit rows and (when
/// disabling) the end of its sessions, in one transaction. An admin cannot change their
/// own access (no one locks the store out by a slip).
pub async fn set_access(
    ctx: &Ctx,
    actor: &crate::audit::Actor,
    target: UserId,
    patch: AccessPatch,
) -> Result<User> {
    use crate::audit::{self, Action, Target};
    if patch.role.is_none() && patch.disabled.is_none() {
        return Err(Error::validation("body", "set role and/or disabled"));
    }
    if actor.user == Some(target) {
        return Err(Error::CannotChangeOwnAccess);
    }
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let before = crate::users::lock_active(&mut tx, target)
        .await?
        .ok_or(Error::NotFound)?;
    let user = crate::users::set_access(&mut tx, target, patch.role, patch.disabled, now).await?;
    if before.role != user.role {
        audit::record(
            &mut tx,
            actor,
            Action::UserRoleChanged,
            Target::row("user", &target),
            serde_json::json!({ "from": before.role.as_str(), "to": user.role.as_str() }),
            now,
        )
        .await?;
    }
    match (before.disabled_at.is_some(), user.disabled_at.is_some()) {
        (false, true) => {
            let ended =
                sessions::revoke_all(&mut tx, target, None, RevokeReason::AccountInactive, now)
                    .await?;
            audit::record(
                &mut tx,
                actor,
                Action::UserDisabled,
                Target::row("user", &target),
                serde_json::json!({ "sessions_ended": ended }),
                now,
            )
            .await?;
        }
        (true, false) => {
            audit::record(
                &mut tx,
                actor,
                Action::UserEnabled,
                Target::row("user", &target),
                serde_json::json!({}),
                now,
            )
            .await?;
        }
        _ => {}
    }
    tx.commit().await?;
    tracing::info!(user_id = %target, role = user.role.as_str(), disabled = user.disabled_at.is_some(),
        "account access changed by an admin");
    Ok(user)
}
