//! Account use cases that span the user row and its sessions: withdrawal (sessions end
//! with the account, in one transaction) and profile edits (a password change ends the
//! other sessions). Above `users` (rows, profile) and `sessions` (tokens), so neither
//! imports the other's caller.

use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::sessions::Principal;
use crate::store::sessions::RevokeReason;
use crate::users::{ProfilePatch, User};
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
