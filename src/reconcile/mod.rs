//! Reconcile: the long-running reconciler behind `berth watch`. It follows a source (a git
//! branch, tag or commit, or a folder), and on every new revision runs the same pipeline
//! as `berth apply` — load, validate, plan, server-side apply, prune — so CI and the
//! cluster compute the same thing. Around it: a periodic drift check that heals live edits
//! (the reconciler owns its fields, so it applies with force-conflicts), idle termination
//! of workspaces, exponential backoff of failed applies, leader election so only one of
//! several replicas writes, and the status, Events, metrics and webhook people see.
//!
//! A refused revision is never applied: one that does not validate, or — with
//! `--verify-commits` — whose commit is not signed by an allowed key. The last good one
//! stays in force, and the refusal is reported once per revision, by one code path for
//! both ([`state::Refusal`]): log, Event, status, metric.
//!
//! The files, in the order a revision meets them:
//!
//! - `config`: how `berth watch` runs; [`cli`]: its command line.
//! - `run`: the loop and its triggers ([`start`]); `cycle`: one cycle; `apply`: applying
//!   one revision; `report`: the status and Events after each cycle; [`idle`]: idle
//!   termination; `commit_status`: what [`notify`] is told, and [`notify`] the commit
//!   statuses and chat messages it sends to the git host, off the loop's path.
//! - `state`: what the loop remembers between cycles; `shared`: what it shares with the
//!   HTTP server (`server`, `page`, `hooks`, [`webhook`]) and the caller.
//! - [`leader`], [`backoff`], [`metrics`], [`status`]: leader election, retry delays,
//!   Prometheus metrics, the status ConfigMap and Events.
//!
//! This file only declares them and names the public API.

mod apply;
pub mod backoff;
pub mod cli;
mod commit_status;
mod config;
mod cycle;
mod hooks;
pub mod idle;
pub mod leader;
pub mod metrics;
pub mod notify;
mod page;
mod report;
mod run;
mod server;
mod shared;
mod state;
pub mod status;
pub mod webhook;

pub use config::Config;
pub use run::{Running, start};
pub use shared::Shared;
