//! Reviews: one active review per customer and item, only for items in a paid order;
//! soft delete; the item's star average and review count recomputed from the active
//! reviews in the transaction that changes them.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::error::{unique_violation, Error, FieldError, Result};
use crate::ids::UserId;
use crate::page::{Page, PageRequest};
use crate::validate::{self, Checks};
use crate::Ctx;

/// The longest review text, in characters.
pub const MAX_CONTENT_CHARS: usize = 1000;

/// `POST /api/items/{id}/reviews`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReviewInput {
    /// 1–5.
    #[schema(required = true, minimum = 1, maximum = 5, example = 5)]
    pub star: Option<i64>,
    /// 1–1000 characters.
    #[schema(required = true, example = "눈이 덜 피로해요.")]
    pub content: String,
}

/// `PATCH /api/reviews/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReviewPatch {
    #[schema(minimum = 1, maximum = 5)]
    pub star: Option<i64>,
    pub content: Option<String>,
}

/// `?sort=` of an item's reviews.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    /// `newest` (default), `oldest`, `star_desc` or `star_asc`. Equal times are ordered by
    /// id; equal stars newest first (time, then id).
    pub sort: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReviewSort {
    #[default]
    Newest,
    Oldest,
    StarDesc,
    StarAsc,
}

impl ReviewSort {
    pub fn parse(value: Option<&str>) -> Result<Self, &'static str> {
        match value.map(str::trim) {
            None | Some("") | Some("newest") => Ok(ReviewSort::Newest),
            Some("oldest") => Ok(ReviewSort::Oldest),
            Some("star_desc") => Ok(ReviewSort::StarDesc),
            Some("star_asc") => Ok(ReviewSort::StarAsc),
            Some(_) => Err("must be newest, oldest, star_desc or star_asc"),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ReviewSort::Newest => "newest",
            ReviewSort::Oldest => "oldest",
            ReviewSort::StarDesc => "star_desc",
            ReviewSort::StarAsc => "star_asc",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Review {
    pub id: i64,
    pub item_id: i64,
    pub item_title: String,
    pub user_id: UserId,
    /// The writer's display name; `None` once the account is withdrawn.
    pub author: Option<String>,
    pub star: i16,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn check_star(checks: &mut Checks, star: Option<i64>, required: bool) {
    match star {
        None if required => checks.check("star", Err("is required")),
        Some(s) if !(1..=5).contains(&s) => checks.check("star", Err("must be 1 to 5")),
        _ => {}
    }
}

/// Windows line ends become `\n`; surrounding blanks are dropped.
fn normalize_content(content: &str) -> String {
    content.replace("\r\n", "\n").trim().to_owned()
}

fn check_content(checks: &mut Checks, content: &str) {
    checks.check("content", validate::text(content, MAX_CONTENT_CHARS));
}

/// The sort and the page, or every rejected field of both.
fn validate_listing(query: &ReviewQuery, page: PageRequest) -> Result<(ReviewSort, PageRequest)> {
    match (ReviewSort::parse(query.sort.as_deref()), page.validate()) {
        (Ok(sort), Ok(page)) => Ok((sort, page)),
        (sort, page) => {
            let mut fields = Vec::new();
            if let Err(reason) = sort {
                fields.push(FieldError::new("sort", reason));
            }
            match page {
                Err(Error::Validation(f)) => fields.extend(f),
                Err(other) => return Err(other),
                Ok(_) => {}
            }
            Err(Error::Validation(fields))
        }
    }
}

// ---- services ---------------------------------------------------------------------------

/// An item's active reviews; 404 if the item does not exist or was deleted.
pub async fn list_for_item(
    ctx: &Ctx,
    item_id: i64,
    query: ReviewQuery,
    page: PageRequest,
) -> Result<Page<Review>> {
    let (sort, page) = validate_listing(&query, page)?;
    let mut conn = ctx.db.acquire().await?;
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM items WHERE id = $1 AND deleted_at IS NULL) AS "e!""#,
        item_id
    )
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Err(Error::NotFound);
    }
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM reviews WHERE item_id = $1 AND deleted_at IS NULL"#,
        item_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let items = sqlx::query_as!(
        ReviewRow,
        r#"SELECT r.id, r.item_id, i.title AS item_title, r.user_id,
                  CASE WHEN u.status = 'active' THEN u.display_name END AS author,
                  r.star, r.content, r.created_at, r.updated_at
           FROM reviews r
           JOIN items i ON i.id = r.item_id
           JOIN users u ON u.id = r.user_id
           WHERE r.item_id = $1 AND r.deleted_at IS NULL
           ORDER BY
               CASE WHEN $2 = 'star_desc' THEN r.star END DESC,
               CASE WHEN $2 = 'star_asc' THEN r.star END ASC,
               CASE WHEN $2 = 'oldest' THEN r.created_at END ASC,
               CASE WHEN $2 = 'oldest' THEN r.id END ASC,
               r.created_at DESC, r.id DESC
           LIMIT $3 OFFSET $4"#,
        item_id,
        sort.as_str(),
        page.size,
        page.offset(),
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Page {
        items: items.into_iter().map(Review::from).collect(),
        page: page.page,
        size: page.size,
        total,
    })
}

/// The caller's active reviews, newest first.
pub async fn list_mine(ctx: &Ctx, user: UserId, page: PageRequest) -> Result<Page<Review>> {
    let page = page.validate()?;
    let mut conn = ctx.db.acquire().await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM reviews WHERE user_id = $1 AND deleted_at IS NULL"#,
        user.0
    )
    .fetch_one(&mut *conn)
    .await?;
    let items = sqlx::query_as!(
        ReviewRow,
        r#"SELECT r.id, r.item_id, i.title AS item_title, r.user_id,
                  CASE WHEN u.status = 'active' THEN u.display_name END AS author,
                  r.star, r.content, r.created_at, r.updated_at
           FROM reviews r
           JOIN items i ON i.id = r.item_id
           JOIN users u ON u.id = r.user_id
           WHERE r.user_id = $1 AND r.deleted_at IS NULL
           ORDER BY r.id DESC
           LIMIT $2 OFFSET $3"#,
        user.0,
        page.size,
        page.offset(),
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Page {
        items: items.into_iter().map(Review::from).collect(),
        page: page.page,
        size: page.size,
        total,
    })
}

/// Writes the caller's review of an item: 404 if the item is missing or deleted,
/// `NotPurchased` without a paid order of it, `AlreadyReviewed` if an active review exists.
pub async fn create(ctx: &Ctx, user: UserId, item_id: i64, input: ReviewInput) -> Result<Review> {
    let content = normalize_content(&input.content);
    let mut checks = Checks::default();
    check_star(&mut checks, input.star, true);
    check_content(&mut checks, &content);
    checks.finish()?;
    let star = star_value(input.star.unwrap_or_default())?;

    let mut tx = ctx.db.begin().await?;
    if !lock_item(&mut tx, item_id, false).await? {
        return Err(Error::NotFound);
    }
    if !has_paid_order(&mut tx, user, item_id).await? {
        return Err(Error::NotPurchased);
    }
    let inserted = sqlx::query_scalar!(
        "INSERT INTO reviews (user_id, item_id, star, content) VALUES ($1, $2, $3, $4)
         RETURNING id",
        user.0,
        item_id,
        star,
        content,
    )
    .fetch_one(&mut *tx)
    .await;
    let id = match inserted {
        Ok(id) => id,
        Err(e) if unique_violation(&e) == Some("reviews_user_item_key") => {
            return Err(Error::AlreadyReviewed)
        }
        Err(e) => return Err(e.into()),
    };
    recompute_item_stats(&mut tx, item_id).await?;
    let review = fetch(&mut tx, id).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok(review)
}

/// Edits the caller's own active review; anyone else's (or a deleted one) is 404.
pub async fn update(ctx: &Ctx, user: UserId, id: i64, patch: ReviewPatch) -> Result<Review> {
    let content = patch.content.as_deref().map(normalize_content);
    let mut checks = Checks::default();
    check_star(&mut checks, patch.star, false);
    if let Some(c) = &content {
        check_content(&mut checks, c);
    }
    checks.finish()?;
    let star = patch.star.map(star_value).transpose()?;

    let mut tx = ctx.db.begin().await?;
    let item_id = own_review_item(&mut tx, user, id)
        .await?
        .ok_or(Error::NotFound)?;
    lock_item(&mut tx, item_id, true).await?;
    let updated = sqlx::query!(
        "UPDATE reviews SET star = COALESCE($3, star), content = COALESCE($4, content)
         WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
        id,
        user.0,
        star,
        content,
    )
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        // Deleted between the look-up and the lock.
        return Err(Error::NotFound);
    }
    recompute_item_stats(&mut tx, item_id).await?;
    let review = fetch(&mut tx, id).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok(review)
}

/// Soft-deletes the caller's own active review; anyone else's (or a deleted one) is 404.
/// The customer may then review the item again.
pub async fn delete(ctx: &Ctx, user: UserId, id: i64) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    let item_id = own_review_item(&mut tx, user, id)
        .await?
        .ok_or(Error::NotFound)?;
    lock_item(&mut tx, item_id, true).await?;
    let deleted = sqlx::query!(
        "UPDATE reviews SET deleted_at = $3
         WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
        id,
        user.0,
        ctx.clock.now(),
    )
    .execute(&mut *tx)
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(Error::NotFound);
    }
    recompute_item_stats(&mut tx, item_id).await?;
    tx.commit().await?;
    Ok(())
}

/// A checked star as the column stores it.
fn star_value(star: i64) -> Result<i16> {
    i16::try_from(star).map_err(|_| Error::validation("star", "must be 1 to 5"))
}

// ---- repository -------------------------------------------------------------------------

#[derive(Debug)]
struct ReviewRow {
    id: i64,
    item_id: i64,
    item_title: String,
    user_id: i64,
    author: Option<String>,
    star: i16,
    content: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ReviewRow> for Review {
    fn from(r: ReviewRow) -> Self {
        Review {
            id: r.id,
            item_id: r.item_id,
            item_title: r.item_title,
            user_id: UserId(r.user_id),
            author: r.author,
            star: r.star,
            content: r.content,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

async fn fetch(conn: &mut PgConnection, id: i64) -> Result<Option<Review>> {
    let row = sqlx::query_as!(
        ReviewRow,
        r#"SELECT r.id, r.item_id, i.title AS item_title, r.user_id,
                  CASE WHEN u.status = 'active' THEN u.display_name END AS author,
                  r.star, r.content, r.created_at, r.updated_at
           FROM reviews r
           JOIN items i ON i.id = r.item_id
           JOIN users u ON u.id = r.user_id
           WHERE r.id = $1 AND r.deleted_at IS NULL"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(Review::from))
}

/// Locks the item row so writers of its reviews serialize and the recomputed stats are
/// exact. `false` if there is no such item (or it is deleted and `deleted_ok` is false).
pub async fn lock_item(conn: &mut PgConnection, item_id: i64, deleted_ok: bool) -> Result<bool> {
    let found = sqlx::query_scalar!(
        "SELECT id FROM items WHERE id = $1 AND ($2 OR deleted_at IS NULL) FOR UPDATE",
        item_id,
        deleted_ok,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(found.is_some())
}

/// Whether one of the user's paid orders contains the item.
pub async fn has_paid_order(conn: &mut PgConnection, user: UserId, item_id: i64) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM orders o JOIN order_items oi ON oi.order_id = o.id
               WHERE o.user_id = $1 AND oi.item_id = $2 AND o.status = 'paid'
           ) AS "e!""#,
        user.0,
        item_id,
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// The item of the user's own active review `id`.
async fn own_review_item(conn: &mut PgConnection, user: UserId, id: i64) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        "SELECT item_id FROM reviews WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
        id,
        user.0,
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// `star_avg = round(avg(star), 2)` (0 with no reviews) and `review_count` from the
/// item's active reviews. Call with the item row locked.
pub async fn recompute_item_stats(conn: &mut PgConnection, item_id: i64) -> Result<()> {
    sqlx::query!(
        "UPDATE items SET star_avg = s.avg, review_count = s.n
         FROM (SELECT COALESCE(round(avg(star), 2), 0) AS avg, count(*)::int AS n
               FROM reviews WHERE item_id = $1 AND deleted_at IS NULL) s
         WHERE items.id = $1",
        item_id
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_parse_and_unknown_ones_name_the_field() {
        assert_eq!(ReviewSort::parse(None).unwrap(), ReviewSort::Newest);
        assert_eq!(ReviewSort::parse(Some("")).unwrap(), ReviewSort::Newest);
        assert_eq!(
            ReviewSort::parse(Some("oldest")).unwrap(),
            ReviewSort::Oldest
        );
        assert_eq!(
            ReviewSort::parse(Some("star_desc")).unwrap(),
            ReviewSort::StarDesc
        );
        assert_eq!(
            ReviewSort::parse(Some("star_asc")).unwrap(),
            ReviewSort::StarAsc
        );
        assert!(ReviewSort::parse(Some("best")).is_err());
        let bad = validate_listing(
            &ReviewQuery {
                sort: Some("best".into()),
            },
            PageRequest { page: 0, size: 101 },
        );
        match bad {
            Err(Error::Validation(f)) => assert_eq!(
                f.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(),
                ["sort", "page", "size"]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn star_and_content_bounds() {
        let fields = |star: Option<i64>, content: &str| {
            let mut c = Checks::default();
            check_star(&mut c, star, true);
            check_content(&mut c, &normalize_content(content));
            c.0.into_iter().map(|f| f.field).collect::<Vec<_>>()
        };
        assert!(fields(Some(1), "좋아요").is_empty());
        assert!(fields(Some(5), &"가".repeat(1000)).is_empty());
        assert_eq!(fields(Some(0), "x"), ["star"]);
        assert_eq!(fields(Some(6), "x"), ["star"]);
        assert_eq!(fields(None, "x"), ["star"]);
        assert_eq!(fields(Some(3), "   "), ["content"]);
        assert_eq!(fields(Some(3), &"가".repeat(1001)), ["content"]);
        assert!(fields(Some(3), "line one\r\nline two").is_empty());
    }
}
