//! Admins' writes: create, update, delete and bulk import (CSV or JSON) of items.

use super::*;
use crate::audit::{self, Actor};

pub(super) async fn fetch_detail(
    conn: &mut PgConnection,
    id: i64,
    lock: bool,
) -> Result<Option<ItemDetail>> {
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {DETAIL_COLUMNS} FROM items WHERE deleted_at IS NULL AND id = "
    ));
    q.push_bind(id);
    if lock {
        q.push(" FOR UPDATE");
    }
    Ok(q.build_query_as::<ItemDetail>()
        .fetch_optional(&mut *conn)
        .await?)
}

/// Inserts validated items in one statement; returns their ids in input order.
pub(super) async fn insert_items(conn: &mut PgConnection, items: &[ItemInput]) -> Result<Vec<i64>> {
    let col = |f: fn(&ItemInput) -> String| items.iter().map(f).collect::<Vec<String>>();
    let ids = sqlx::query_scalar!(
        r#"INSERT INTO items (brand, title, description, main_function, intake, precautions,
                              serving_use, preservation, distribution_period, standard, capacity,
                              thumbnail_url, description_image_url, origin_price, discount_rate,
                              selling, categories)
           SELECT b, t, d, m, i, p, s, pr, dp, st, c, tu, du, op, dr, se, string_to_array(cat, ',')
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                       $13::text[], $14::int8[], $15::int4[], $16::bool[], $17::text[])
                WITH ORDINALITY AS x(b, t, d, m, i, p, s, pr, dp, st, c, tu, du, op, dr, se, cat, n)
           ORDER BY n
           RETURNING id"#,
        &col(|i| i.brand.trim().to_owned()),
        &col(|i| i.title.trim().to_owned()),
        &col(|i| i.description.clone()),
        &col(|i| i.main_function.clone()),
        &col(|i| i.intake.clone()),
        &col(|i| i.precautions.clone()),
        &col(|i| i.serving_use.clone()),
        &col(|i| i.preservation.clone()),
        &col(|i| i.distribution_period.clone()),
        &col(|i| i.standard.clone()),
        &col(|i| i.capacity.clone()),
        &items
            .iter()
            .map(|i| i.thumbnail_url.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &items
            .iter()
            .map(|i| i.description_image_url.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &items
            .iter()
            .map(|i| i.origin_price.unwrap_or_default())
            .collect::<Vec<i64>>(),
        &items.iter().map(|i| i.discount_rate).collect::<Vec<i32>>(),
        &items
            .iter()
            .map(|i| i.selling.unwrap_or(true))
            .collect::<Vec<bool>>(),
        &col(|i| i.categories().join(",")),
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(ids)
}

pub async fn create(ctx: &Ctx, actor: &Actor, input: ItemInput) -> Result<ItemDetail> {
    let mut checks = Checks::default();
    input.check(&mut checks);
    checks.finish()?;
    let mut tx = ctx.db.begin().await?;
    let ids = insert_items(&mut tx, std::slice::from_ref(&input)).await?;
    let id = *ids
        .first()
        .ok_or_else(|| Error::Internal("insert returned no id".into()))?;
    let item = fetch_detail(&mut tx, id, false)
        .await?
        .ok_or(Error::NotFound)?;
    audit::record(
        &mut tx,
        actor,
        audit::Action::ItemCreated,
        audit::Target::row("item", &id),
        serde_json::json!({ "title": input.title.trim() }),
        ctx.clock.now(),
    )
    .await?;
    tx.commit().await?;
    invalidate_pages(ctx).await;
    Ok(item)
}

pub async fn update(ctx: &Ctx, actor: &Actor, id: i64, patch: ItemPatch) -> Result<ItemDetail> {
    // What the patch set, for the audit log (the fields it left out are not changes).
    let mut changed = serde_json::to_value(&patch).unwrap_or_default();
    if let Some(fields) = changed.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    let mut tx = ctx.db.begin().await?;
    let current = fetch_detail(&mut tx, id, true)
        .await?
        .ok_or(Error::NotFound)?;
    let mut merged = ItemInput::from(current);
    merged.apply(patch);
    let mut checks = Checks::default();
    merged.check(&mut checks);
    checks.finish()?;
    sqlx::query!(
        r#"UPDATE items SET brand = $2, title = $3, description = $4, main_function = $5,
                  intake = $6, precautions = $7, serving_use = $8, preservation = $9,
                  distribution_period = $10, standard = $11, capacity = $12, thumbnail_url = $13,
                  description_image_url = $14, origin_price = $15, discount_rate = $16,
                  selling = $17, categories = $18
           WHERE id = $1"#,
        id,
        merged.brand.trim(),
        merged.title.trim(),
        merged.description,
        merged.main_function,
        merged.intake,
        merged.precautions,
        merged.serving_use,
        merged.preservation,
        merged.distribution_period,
        merged.standard,
        merged.capacity,
        merged.thumbnail_url,
        merged.description_image_url,
        merged.origin_price.unwrap_or_default(),
        merged.discount_rate,
        merged.selling.unwrap_or(true),
        &merged.categories(),
    )
    .execute(&mut *tx)
    .await?;
    let item = fetch_detail(&mut tx, id, false)
        .await?
        .ok_or(Error::NotFound)?;
    audit::record(
        &mut tx,
        actor,
        audit::Action::ItemUpdated,
        audit::Target::row("item", &id),
        changed,
        ctx.clock.now(),
    )
    .await?;
    tx.commit().await?;
    invalidate_pages(ctx).await;
    Ok(item)
}

/// Soft delete: carts and orders keep pointing at the row and show it as unavailable.
pub async fn delete(ctx: &Ctx, actor: &Actor, id: i64) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    let title = sqlx::query_scalar!(
        "UPDATE items SET deleted_at = $2, selling = false WHERE id = $1 AND deleted_at IS NULL
         RETURNING title",
        id,
        ctx.clock.now()
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    audit::record(
        &mut tx,
        actor,
        audit::Action::ItemDeleted,
        audit::Target::row("item", &id),
        serde_json::json!({ "title": title }),
        ctx.clock.now(),
    )
    .await?;
    tx.commit().await?;
    invalidate_pages(ctx).await;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    JsonLines,
    Csv,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportReport {
    pub inserted: usize,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
}

/// Parses and validates every line first; any bad line rejects the whole import (422 with
/// `line N: field` names) and nothing is written. Then one transaction inserts them all.
pub async fn import(
    ctx: &Ctx,
    actor: &Actor,
    body: &str,
    format: ImportFormat,
) -> Result<ImportReport> {
    let items = parse_import(body, format)?;
    let mut tx = ctx.db.begin().await?;
    let mut ids = Vec::with_capacity(items.len());
    for chunk in items.chunks(5_000) {
        ids.extend(insert_items(&mut tx, chunk).await?);
    }
    audit::record(
        &mut tx,
        actor,
        audit::Action::ItemsImported,
        audit::Target::many("item"),
        serde_json::json!({
            "inserted": ids.len(), "first_id": ids.first(), "last_id": ids.last(),
        }),
        ctx.clock.now(),
    )
    .await?;
    tx.commit().await?;
    invalidate_pages(ctx).await;
    tracing::info!(inserted = ids.len(), "items imported");
    Ok(ImportReport {
        inserted: ids.len(),
        first_id: ids.first().copied(),
        last_id: ids.last().copied(),
    })
}

pub(super) fn parse_import(body: &str, format: ImportFormat) -> Result<Vec<ItemInput>> {
    let mut items = Vec::new();
    let mut errors: Vec<FieldError> = Vec::new();
    let mut push = |line: usize, parsed: std::result::Result<ItemInput, String>| match parsed {
        Ok(item) => {
            let mut checks = Checks::default();
            item.check(&mut checks);
            for f in checks.0 {
                errors.push(FieldError::new(
                    format!("line {line}: {}", f.field),
                    f.reason,
                ));
            }
            items.push(item);
        }
        Err(reason) => errors.push(FieldError::new(format!("line {line}"), reason)),
    };
    match format {
        ImportFormat::JsonLines => {
            for (i, line) in body.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                push(i + 1, serde_json::from_str(line).map_err(|e| e.to_string()));
            }
        }
        ImportFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .trim(csv::Trim::Fields)
                .from_reader(body.as_bytes());
            for (i, record) in reader.deserialize::<CsvItem>().enumerate() {
                // Line 1 is the header.
                push(
                    i + 2,
                    record.map(ItemInput::from).map_err(|e| e.to_string()),
                );
            }
        }
    }
    if items.is_empty() && errors.is_empty() {
        errors.push(FieldError::new("body", "no items"));
    }
    if errors.len() > 100 {
        errors.truncate(100);
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(Error::Validation(errors))
    }
}

/// A CSV row: the same columns as the JSON fields; empty cells are absent values.
#[derive(Debug, Deserialize)]
pub(super) struct CsvItem {
    brand: String,
    title: String,
    #[serde(default)]
    description: String,
    main_function: String,
    #[serde(default)]
    intake: String,
    #[serde(default)]
    precautions: String,
    #[serde(default)]
    serving_use: String,
    #[serde(default)]
    preservation: String,
    #[serde(default)]
    distribution_period: String,
    #[serde(default)]
    standard: String,
    #[serde(default)]
    capacity: String,
    #[serde(default)]
    thumbnail_url: Option<String>,
    #[serde(default)]
    description_image_url: Option<String>,
    origin_price: i64,
    #[serde(default)]
    discount_rate: i32,
    #[serde(default)]
    selling: Option<bool>,
}

impl From<CsvItem> for ItemInput {
    fn from(c: CsvItem) -> Self {
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        ItemInput {
            brand: c.brand,
            title: c.title,
            description: c.description,
            main_function: c.main_function,
            intake: c.intake,
            precautions: c.precautions,
            serving_use: c.serving_use,
            preservation: c.preservation,
            distribution_period: c.distribution_period,
            standard: c.standard,
            capacity: c.capacity,
            thumbnail_url: non_empty(c.thumbnail_url),
            description_image_url: non_empty(c.description_image_url),
            origin_price: Some(c.origin_price),
            discount_rate: c.discount_rate,
            selling: c.selling,
        }
    }
}
