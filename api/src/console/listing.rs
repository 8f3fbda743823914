//! What the jobs, webhooks, users and audit pages add to the list helpers of
//! `subscriptions`: search forms' text fields (blank is "any"), the search selects' filter,
//! and how long texts and JSON are shown.

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
