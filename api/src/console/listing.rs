//! What the console's list pages share: row ids from the path, filters, paging and the
//! pager, links' query strings, search forms' text fields (blank is "any"), the search
//! selects' filter, and how long texts and JSON are shown.

use billing::page::{Page, PageRequest};
use serde::de::DeserializeOwned;

use super::ConsoleError;

/// The console's template filters, and those of the search forms.
pub mod filters {
    pub use crate::console::filters::*;

    /// Whether an option is the one a search has (any mix of `str`s and `String`s).
    pub fn same(
        option: impl AsRef<str>,
        _: &dyn askama::Values,
        current: impl AsRef<str>,
    ) -> askama::Result<bool> {
        Ok(option.as_ref() == current.as_ref())
    }
}

/// A search form's field: blank means "any" (a GET form sends every field, filled or not).
pub fn nonempty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// At most `max` characters of `text`, with `…` when cut: a list's column, not the record.
pub fn excerpt(text: Option<&str>, max: usize) -> String {
    let Some(text) = text else {
        return String::new();
    };
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// JSON as operators read it: indented.
pub fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A row id from the path: anything but a positive number is a page that does not exist.
pub fn row_id(raw: &str) -> Result<i64, ConsoleError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| billing::Error::NotFound.into())
}

/// A filter's value (`field`) as one of its snake_case names; empty is no filter.
pub fn choice<T: DeserializeOwned>(
    field: &str,
    raw: Option<&str>,
) -> Result<Option<T>, ConsoleError> {
    let Some(raw) = raw.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(raw))
        .map(Some)
        .map_err(|_| billing::Error::validation(field, "is not one of the listed values").into())
}

/// `?page=&size=` of a list page (20 a page unless asked).
pub fn paging(page: Option<&str>, size: Option<&str>) -> Result<PageRequest, ConsoleError> {
    let number = |field: &str, raw: Option<&str>, default: i64| match raw
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| billing::Error::validation(field, "must be a number")),
    };
    Ok(PageRequest {
        page: number("page", page, 1)?,
        size: number("size", size, 20)?,
    })
}

/// A list page's figures for its pager: "1–20 of 57", previous and next.
pub struct Pager {
    pub page: i64,
    pub first: i64,
    pub last: i64,
    /// The count, or `None` when there are more than the count cap.
    pub total: Option<i64>,
    pub has_prev: bool,
    pub has_next: bool,
}

impl Pager {
    pub fn of<T>(p: &Page<T>) -> Self {
        let shown = p.items.len() as i64;
        let first = if shown == 0 {
            0
        } else {
            (p.page - 1) * p.size + 1
        };
        Pager {
            page: p.page,
            first,
            last: first + shown - 1,
            total: (p.total <= billing::search::COUNT_CAP).then_some(p.total),
            has_prev: p.page > 1,
            has_next: p.page * p.size < p.total,
        }
    }
}

/// Query-string pairs as a link's `?…` (values percent-encoded; empty ones left out).
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        s.append_pair(k, v);
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_fields_and_excerpts() {
        assert_eq!(nonempty(Some("  ".into())), None);
        assert_eq!(nonempty(Some(" pg ".into())), Some("pg".into()));
        assert_eq!(excerpt(Some("abcdef"), 3), "abc…");
        assert_eq!(excerpt(Some("abc"), 3), "abc");
        assert_eq!(excerpt(None, 3), "");
    }
}
