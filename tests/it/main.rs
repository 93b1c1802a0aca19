mod support;

mod accounts;
mod auth;
mod cli;
mod cluster;
mod credentials;
mod hostile;
mod http;
mod lifecycle;
mod limits;
mod node;
mod observability;
mod openapi;
mod policy;
mod readme;
mod store;
mod turn;
