//! What an operator's search box holds (a row's id, a customer's e-mail or phone number)
//! and the accounts it names; the console's subscription and order searches start here.

use sqlx::PgConnection;

use crate::error::{Error, FieldError, Result};
use crate::validate;

/// Lists count their matches up to this many; a page says "more than" beyond it, so a
/// broad filter never counts a whole table.
pub const COUNT_CAP: i64 = 10_000;

/// One row of a page of matches, with how many rows matched in all (`count(*) OVER ()`).
pub(crate) struct Hit {
    pub id: i64,
    pub total: i64,
}

/// A page of hits as its ids, in order, and the count of all matches.
pub(crate) fn ids_and_total(hits: Vec<Hit>) -> (Vec<i64>, i64) {
    let total = hits.first().map_or(0, |h| h.total);
    (hits.into_iter().map(|h| h.id).collect(), total)
}

/// A search box's meaning: rows with this id, or rows of these customers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    pub id: Option<i64>,
    pub users: Vec<i64>,
}

/// Reads `q`: digits are an id (and a phone number, when they are one); `@` makes an
/// e-mail (any case); a mobile number with or without dashes finds its owner. `None` for
/// an empty box. Control characters are refused, as in every text input.
pub async fn lookup(conn: &mut PgConnection, q: &str) -> Result<Option<Lookup>> {
    let q = q.trim();
    if q.is_empty() {
        return Ok(None);
    }
    if q.chars().any(char::is_control) {
        return Err(Error::InvalidCharacters(vec![FieldError::new(
            "q",
            "must not contain control characters",
        )]));
    }
    if q.chars().count() > 254 {
        return Err(Error::validation(
            "q",
            "is too long (at most 254 characters)",
        ));
    }
    let id = q
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| q.parse::<i64>().ok())
        .flatten();
    let users = if q.contains('@') {
        let email = validate::normalize_email(q);
        sqlx::query_scalar!("SELECT id FROM users WHERE email = $1", email)
            .fetch_all(&mut *conn)
            .await?
    } else if let Some(digits) = validate::normalize_phone(q) {
        // Accounts store the digits; rows written by other means may keep the dashes.
        let forms = vec![validate::format_phone(&digits), digits];
        sqlx::query_scalar!("SELECT id FROM users WHERE phone = ANY($1)", &forms)
            .fetch_all(&mut *conn)
            .await?
    } else {
        Vec::new()
    };
    Ok(Some(Lookup { id, users }))
}
