//! Row stores: the rows that several use cases write, written in one place each. Above
//! the adapters, below the use cases (checkout, payment steps, the billing cycle).

pub mod orders;
pub mod sessions;
pub mod subscriptions;
