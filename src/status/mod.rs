//! The status page served at `/` of the HTTP listener: one HTML page a person can read
//! (brokers, topics with partitions, consumer groups with lag, recent errors), refreshed by
//! the browser itself.
//!
//! - [`view`]: what the page shows, as plain data.
//! - [`gather`]: builds the view from the broker's state; the `/` route.
//! - [`page`]: renders a view to self-contained HTML (pure; every client string escaped).
//! - [`rates`]: messages per second per topic from successive samples.
//! - [`recent_errors`]: a `tracing` layer keeping the last warnings and errors.

pub mod gather;
pub mod page;
pub mod rates;
pub mod recent_errors;
pub mod view;
