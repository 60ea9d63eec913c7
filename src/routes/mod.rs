//! Routes: the SQLite store, the watcher that notices changes, the
//! immutable [`table::RouteTable`] and its publication to every core.
//!
//! Data flows one way: store → watcher → [`snapshot::SnapshotBoard`] →
//! each core's [`snapshot::CoreSnapshot`]. Nothing here runs on a request's
//! path except [`table::RouteTable::lookup`].

pub mod hosts;
pub mod key;
pub mod modules;
pub mod snapshot;
pub mod store;
pub mod store_events;
pub mod table;
pub mod watcher;
