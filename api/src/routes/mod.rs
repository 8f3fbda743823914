//! HTTP routes, one module per area; each handler extracts, calls one `billing` function
//! and maps the result to a DTO.

pub mod admin;
pub mod auth;
pub mod carts;
pub mod checkouts;
pub mod health;
pub mod items;
pub mod orders;
pub mod reviews;
pub mod sessions;
pub mod subscriptions;
pub mod users;
pub mod webhooks;
