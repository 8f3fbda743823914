//! Who changes a customer's row: the customer, on their own rows only, or an operator
//! acting on the customer's behalf (any row, the action audited in its own transaction).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::audit::{self, Action, Actor, Target};
use crate::error::Result;
use crate::ids::UserId;

#[derive(Debug, Clone, Copy)]
pub enum Editor<'a> {
    /// The customer: a row of anyone else is not found.
    Customer(UserId),
    /// An operator (console or JSON admin route) acting for the row's owner.
    Operator(&'a Actor),
}

impl From<UserId> for Editor<'_> {
    fn from(user: UserId) -> Self {
        Editor::Customer(user)
    }
}

impl<'a> From<&'a Actor> for Editor<'a> {
    fn from(actor: &'a Actor) -> Self {
        Editor::Operator(actor)
    }
}

impl Editor<'_> {
    /// The owner a row must have for this editor to see it (`None`: any).
    pub fn owner(&self) -> Option<UserId> {
        match self {
            Editor::Customer(user) => Some(*user),
            Editor::Operator(_) => None,
        }
    }

    /// An operator's action written to the audit log on the caller's transaction (a
    /// customer's own edits are not operator actions, and are not logged).
    pub async fn audit(
        &self,
        conn: &mut PgConnection,
        action: Action,
        target: Target<'_>,
        details: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        match self {
            Editor::Customer(_) => Ok(()),
            Editor::Operator(actor) => {
                audit::record(conn, actor, action, target, details, now).await
            }
        }
    }
}
