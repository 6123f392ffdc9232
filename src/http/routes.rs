//! The broker's pages on the HTTP listener: one row per path.

use crate::broker::Broker;
use crate::http::server::Route;

pub static ROUTES: &[Route<Broker>] = &[
    Route {
        path: "/metrics",
        handler: crate::metrics::scrape::page,
    },
    Route {
        path: "/",
        handler: crate::status::gather::page,
    },
];
