//! Account use cases that span the user row and its sessions: withdrawal (sessions end
//! with the account). Above `users` (rows, profile) and `sessions` (tokens), so neither
//! imports the other's caller.

use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::{sessions, Ctx};

/// Withdraws the account: sessions are revoked first, so a failure leaves the customer
/// logged out rather than withdrawn with live tokens.
pub async fn withdraw(ctx: &Ctx, id: UserId) -> Result<()> {
    sessions::revoke_all(ctx, id).await?;
    if !crate::users::mark_withdrawn(ctx, id).await? {
        return Err(Error::NotFound);
    }
    tracing::info!(user_id = %id, "account withdrawn");
    Ok(())
}
