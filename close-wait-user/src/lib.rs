//! close-wait: find TCP sockets stuck in CLOSE_WAIT, who holds them and why.
//!
//! Events flow one way: kernel -> `events` -> `tracker` -> (`histograms`,
//! `report`) -> `export`. Owners (`sockets`), stacks (`stacks`), threads
//! (`threads`) and the `diagnosis` are looked up at report time for sockets
//! that are still stuck (`investigate`). Only `loader` and `commands::record`
//! touch aya. Each subcommand is one file in `commands`.

pub mod addr;
pub mod aggregate;
pub mod btf;
pub mod budget;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod diagnosis;
pub mod duration;
pub mod events;
pub mod export;
pub mod fold;
pub mod gopclntab;
pub mod histograms;
pub mod investigate;
pub mod loader;
pub mod logged;
pub mod model;
pub mod netns;
pub mod output;
pub mod privileges;
pub mod python;
pub mod report;
pub mod runtimes;
pub mod sockets;
pub mod stacks;
#[cfg(test)]
mod testutil;
pub mod threads;
pub mod tpformat;
pub mod tracker;
pub mod validate;
