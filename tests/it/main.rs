//! End-to-end tests: the real API (and binaries) against real Postgres and Redis.
//!
//! Each test gets its own database cloned from a migrated template and its own Redis key
//! prefix, so tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod accounts;
mod admin;
mod audit;
mod auth;
mod billing_sim;
mod binaries;
mod browser;
mod carts;
mod console;
mod durability;
mod enumeration;
mod gateway_policy;
mod health;
mod items;
mod jobs;
mod jobs_wakeups;
mod kakaopay_client;
mod layering;
mod oauth;
mod openapi;
mod operations;
mod operator_access;
mod orders;
mod payments;
mod pg_resilience;
mod rate_limit;
mod redis_down;
mod retention;
mod reviews;
mod runtime;
mod sessions;
mod strict_input;
mod subscriptions;
mod webhooks;
