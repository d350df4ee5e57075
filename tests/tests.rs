//! The one integration test binary (`cargo test --test integration`): one
//! binary, so the real RabbitMQ and Redis in `support` start once for all
//! tests.

mod support;

mod accuracy;
mod boundaries;
mod browser;
mod cluster;
mod commands;
mod contract;
mod egress;
mod examples;
mod failover;
mod holes;
mod intercepting;
mod limiter;
mod malformed;
mod monitors;
mod neighbours;
mod operator;
mod our_side;
mod over_tls;
mod php_sites;
mod politeness;
mod proxy_pin;
mod proxy_words;
mod real_servers;
mod redelivery;
mod reliability;
mod resolving;
mod review_aa;
mod review_ab;
mod review_u;
mod support_smoke;
mod trust;
mod worker_e2e;
