//! singleuser-profiles: gives every JupyterHub notebook its own Ray cluster.
//!
//! Pure domain: [`profile`] (matching and merging), [`template`] (rendering), [`naming`],
//! [`catalog`] (the parsed config snapshot) and [`plan`] (one spawn, before any I/O).
//! Kubernetes edge: [`catalog::watch`], [`cluster`] and [`lifecycle`]. HTTP edge: [`api`]. Wiring: [`cli`],
//! [`serve`].

pub mod api;
pub mod app;
pub mod args;
pub mod caps;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod jsonpath_rw;
pub mod labels;
pub mod launcher;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod naming;
pub mod plan;
pub mod pointer;
pub mod policy;
pub mod profile;
pub mod python;
pub mod ray;
pub mod serve;
pub mod settings;
pub mod spawn;
pub mod template;
pub mod yaml;
