//! 1-based paging as every list route answers it: `{items, page, size, total}`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldError};

#[derive(Debug, Clone, Copy, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct PageRequest {
    /// 1-based page number.
    #[param(minimum = 1, default = 1)]
    pub page: i64,
    /// Items per page, 1–100.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub size: i64,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self { page: 1, size: 20 }
    }
}

impl PageRequest {
    pub fn validate(self) -> Result<Self, Error> {
        let mut fields = Vec::new();
        if self.page < 1 || self.page > 1_000_000 {
            fields.push(FieldError::new("page", "must be 1 or more"));
        }
        if !(1..=100).contains(&self.size) {
            fields.push(FieldError::new("size", "must be between 1 and 100"));
        }
        if fields.is_empty() {
            Ok(self)
        } else {
            Err(Error::Validation(fields))
        }
    }

    pub fn offset(self) -> i64 {
        (self.page - 1) * self.size
    }

    pub fn limit(self) -> i64 {
        self.size
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, req: PageRequest, total: i64) -> Self {
        Page {
            items,
            page: req.page,
            size: req.size,
            total,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            page: self.page,
            size: self.size,
            total: self.total,
        }
    }
}
