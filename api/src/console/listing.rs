//! What the console's list and detail pages share: their query and path read with the
//! console's error pages, search forms' empty fields read as "any", links that keep a
//! search while they change one part of it, the pager, and short excerpts.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use billing::page::Page;
use serde::de::DeserializeOwned;

use super::ConsoleError;
use crate::extract::{ApiPath, ApiQuery};

/// A page's query string as `T` (a bad one: the 400 page).
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ConsoleError> {
        let ApiQuery(q) = ApiQuery::from_request_parts(parts, state).await?;
        Ok(Self(q))
    }
}

/// The row a page's path names (one that does not parse: the 404 page).
pub struct RowId<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for RowId<T> {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ConsoleError> {
        let ApiPath(id) = ApiPath::from_request_parts(parts, state).await?;
        Ok(Self(id))
    }
}

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

/// A query string (`a=1&b=x`) of the pairs that have a value, encoded.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

/// `path?query`, or `path` when the query is empty.
pub fn link(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// The pager under a list: where the previous and next pages are, keeping the search.
pub struct Pager {
    pub page: i64,
    pub pages: i64,
    pub total: i64,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// `search` is the page's query without `page` (it keeps `size` if it has one).
    pub fn of<T>(page: &Page<T>, path: &str, search: &str) -> Self {
        let pages = ((page.total + page.size - 1) / page.size).max(1);
        let to = |n: i64| {
            let sep = if search.is_empty() { "" } else { "&" };
            format!("{path}?{search}{sep}page={n}")
        };
        Self {
            page: page.page,
            pages,
            total: page.total,
            prev: (page.page > 1).then(|| to(page.page - 1)),
            next: (page.page < pages).then(|| to(page.page + 1)),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pager_keeps_the_search() {
        let p = Page {
            items: vec![(); 20],
            page: 2,
            size: 20,
            total: 45,
        };
        let pager = Pager::of(&p, "/admin/jobs", "state=failed");
        assert_eq!(pager.pages, 3);
        assert_eq!(
            pager.prev.as_deref(),
            Some("/admin/jobs?state=failed&page=1")
        );
        assert_eq!(
            pager.next.as_deref(),
            Some("/admin/jobs?state=failed&page=3")
        );
        let pager = Pager::of(&p, "/admin/jobs", "");
        assert_eq!(pager.next.as_deref(), Some("/admin/jobs?page=3"));
    }

    #[test]
    fn search_fields_and_excerpts() {
        assert_eq!(nonempty(Some("  ".into())), None);
        assert_eq!(nonempty(Some(" pg ".into())), Some("pg".into()));
        assert_eq!(
            query(&[
                ("state", Some("failed")),
                ("task_type", None),
                ("q", Some("a b&c"))
            ]),
            "state=failed&q=a+b%26c"
        );
        assert_eq!(excerpt(Some("abcdef"), 3), "abc…");
        assert_eq!(excerpt(Some("abc"), 3), "abc");
        assert_eq!(excerpt(None, 3), "");
    }
}
