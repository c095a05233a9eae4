//! The control socket: the CLI's only way to change the running agent.

pub mod client;
pub mod proto;

pub use client::{Client, ClientError};
pub use proto::{Request, Response};
