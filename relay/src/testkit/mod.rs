//! One test kit for every SecureText suite — the relay's, the sender's and the browser's —
//! behind the `test-util` feature (as tokio's `test-util`): the real relay in-process on a
//! random loopback port ([`TestRelay`]), a fresh SQLite file or PostgreSQL database per test
//! ([`TestDb`]), the fixed keys of the protocol vectors ([`keys`]), messages sealed as the
//! sender tooling seals them ([`seal`]), the patient's side played with `shared` as the viewer
//! plays it ([`Patient`]), deadline-bounded polling ([`wait_until`]), a PostgreSQL connection
//! that can be cut ([`DatabaseProxy`]), the `relay serve` binary as a child process to kill
//! ([`RelayProcess`]) and the check of every answer against the generated
//! OpenAPI document ([`Contract`]).
//!
//! It lives in the relay crate because it boots the relay: a separate crate would need the
//! relay as a dependency while the relay's own tests need it as a dev-dependency, a cycle Cargo
//! refuses. The relay's integration tests enable the feature through a dev-dependency on the
//! relay itself; nothing here is compiled into `relay serve`.

mod contract;
mod db;
mod fixtures;
pub mod load;
mod patient;
mod process;
mod proxy;
mod server;
mod wait;

pub use contract::Contract;
pub use db::{POSTGRES_ADMIN_URL, TestDb};
pub use fixtures::{Keys, content, header, keys, seal};
pub use patient::{CheckOutcome, Patient, Unlocked};
pub use process::{Endpoint, RelayProcess, free_port};
pub use proxy::DatabaseProxy;
pub use server::{START, Sender, TestRelay, TestRelayBuilder};
pub use wait::{wait_for, wait_until};
