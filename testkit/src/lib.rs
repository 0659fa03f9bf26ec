//! What the tests and the load tool share: [`process`] runs the service binary, [`client`]
//! is the one HTTP client that talks to it.

pub mod client;
pub mod process;
