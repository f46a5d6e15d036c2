//! Remote environments for enact over HTTP+JSON (protocol `enact-env/1`, see
//! `docs/remote-protocol.md`):
//! - [`client`]: [`RemoteClient`], [`RemoteEnv`] (an `enact_core::Environment`),
//!   [`RemoteSuite`] (`remote:http://HOST:PORT[/SUITE]`) and [`RemoteVerifier`];
//! - [`server`]: exposes any enact suites over the protocol (`enact env serve`), grading
//!   server-side so hidden data never leaves the server.

pub mod client;
pub mod protocol;
pub mod server;

pub use client::{RemoteClient, RemoteEnv, RemoteError, RemoteSuite, RemoteVerifier, split_url};
pub use protocol::PROTOCOL;
pub use server::{ServerConfig, router, serve, spawn};
